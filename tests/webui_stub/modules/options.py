"""modules/options.py: `OptionInfo` and the `Options` object behind `shared.opts`.

Mirrors the real attribute protocol: known keys read from `.data`, else the registered default; writing a
known key stores it in `.data`; unknown attributes raise AttributeError; `set()` reports a change and runs
`onchange`; `cast_value()` converts infotext strings ("False" -> False for bool settings).
"""

from __future__ import annotations

from typing import Any

from modules import errors


class OptionInfo:
    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: Any = None,
        onchange: Any = None,
        section: Any = None,
        refresh: Any = None,
        comment_before: str = "",
        comment_after: str = "",
        infotext: str | None = None,
        restrict_api: bool = False,
        category_id: str | None = None,
    ) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label: str, url: str) -> OptionInfo:
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> OptionInfo:
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> OptionInfo:
        self.comment_after += html
        return self

    def needs_restart(self) -> OptionInfo:
        return self

    def needs_reload_ui(self) -> OptionInfo:
        return self


def options_section(section_identifier: tuple, options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    for info in options_dict.values():
        info.section = tuple(section_identifier[:2])
        if len(section_identifier) == 3:
            info.category_id = section_identifier[2]
    return options_dict


_BUILTIN = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    typemap = {int: float}

    def __init__(self, data_labels: dict[str, OptionInfo], restricted_opts: set[str] | None = None) -> None:
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts or set()

    def __setattr__(self, key: str, value: Any) -> None:
        if key in _BUILTIN:
            object.__setattr__(self, key, value)
        elif key in self.data or key in self.data_labels:
            info = self.data_labels.get(key)
            if info is None or not info.do_not_save:
                self.data[key] = value
        else:
            object.__setattr__(self, key, value)

    def __getattr__(self, item: str) -> Any:
        # only called when normal lookup fails
        if item in _BUILTIN:
            raise AttributeError(item)
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(f"'Options' object has no attribute '{item}'")

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        old = self.data.get(key, None)
        if old == value:
            return False
        option = self.data_labels[key]
        if option.do_not_save or (is_api and option.restrict_api):
            return False
        setattr(self, key, value)
        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception as e:
                errors.display(e, f"changing setting {key} to {value}")
                setattr(self, key, old)
                return False
        return True

    def get_default(self, key: str) -> Any:
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def add_option(self, key: str, info: OptionInfo) -> None:
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def onchange(self, key: str, func: Any, call: bool = True) -> None:
        self.data_labels[key].onchange = func
        if call:
            func()

    def cast_value(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        default = self.data_labels[key].default
        if default is None:
            default = getattr(self, key, None)
        if default is None:
            return None
        kind = type(default)
        if kind is bool and value == "False":
            return False
        return kind(value)
