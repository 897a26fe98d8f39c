"""The webui script's arguments: their public order, and turning untyped values into settings.

The order is public API (`alwayson_scripts: {"ToDo": {"args": [...]}}`): only append, never reorder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..settings import TodoSettings

ARG_NAMES = ("enabled", "factor", "factor_level2", "method", "start", "stop", "hires_mode", "hires_factor")
TRUE_WORDS = ("true", "on", "yes", "1")
FALSE_WORDS = ("false", "off", "no", "0", "")


class ScriptRequest(NamedTuple):
    """What a job asked ToDo for: on or off, the settings to use, and what could not be used."""

    enabled: bool
    settings: TodoSettings
    problems: list[str]


def parse_script_args(args: Sequence[Any], overrides: Mapping[str, Any] | None = None) -> ScriptRequest:
    """Settings from the script's args (UI values, or untyped API values) and per-job overrides (XYZ).

    An override of any setting other than "enabled" switches ToDo on unless "enabled" is overridden too,
    so an XYZ axis of factors compares ToDo settings without ticking the accordion first. Problems are
    reported for an unusable "enabled" value, or for settings of an enabled ToDo.
    """
    values = dict(zip(ARG_NAMES, args, strict=False))  # older callers send fewer args
    overrides = dict(overrides or {})
    if overrides and "enabled" not in overrides:
        overrides["enabled"] = True
    values.update(overrides)
    problems: list[str] = []
    enabled = _to_bool(values.pop("enabled", False), problems)
    if not enabled:  # settings of a disabled ToDo are not looked at, nor complained about
        return ScriptRequest(False, TodoSettings(), problems)
    parsed = TodoSettings.lenient(values)
    return ScriptRequest(True, parsed.settings, parsed.problems)


def _to_bool(value: Any, problems: list[str]) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    problems.append(f"ToDo enabled: got {value!r}; accepted: true or false")
    return False
