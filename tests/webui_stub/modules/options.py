"""Stand-in for modules/options.py: the `Options` object behind `shared.opts`.

Only the read protocol the extension relies on: a registered setting reads from `.data` (its default until
a test writes `.data[name]`), and an unknown name is an AttributeError, so `getattr(opts, name, default)`
works as in the webui.
"""

from __future__ import annotations

from typing import Any


class Options:
    def __init__(self, defaults: dict[str, Any]) -> None:
        self.data = dict(defaults)

    def __getattr__(self, name: str) -> Any:
        # reached only when ordinary lookup failed, i.e. for setting names
        if name != "data" and name in self.data:
            return self.data[name]
        raise AttributeError(f"no setting called {name!r}")
