"""Stand-in for modules/options.py: the `Options` object behind `shared.opts`.

Only the attribute protocol the tests and the extension rely on: a registered setting reads from
`.data` (its default until written), writing one stores it in `.data`, an unknown name is an
AttributeError, and `set()` is the call `process_images` uses for `override_settings`.
"""

from __future__ import annotations

from typing import Any

_OWN = ("data", "defaults")


class Options:
    def __init__(self, defaults: dict[str, Any]) -> None:
        object.__setattr__(self, "defaults", dict(defaults))
        object.__setattr__(self, "data", dict(defaults))

    def __getattr__(self, name: str) -> Any:
        # reached only when ordinary lookup failed, i.e. for setting names
        if name not in _OWN and name in self.data:
            return self.data[name]
        raise AttributeError(f"no setting called {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.defaults:
            self.data[name] = value
        else:
            object.__setattr__(self, name, value)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Store `value` for a known setting; False when nothing changed or the key is unknown."""
        if key not in self.defaults or self.data.get(key) == value:
            return False
        self.data[key] = value
        return True

    def get_default(self, key: str) -> Any:
        return self.defaults.get(key)
