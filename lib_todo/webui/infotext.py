"""ToDo settings to and from the webui's infotext (the "Steps: 20, Sampler: ..., ToDo factor: 2" line).

Keys follow A1111's infotext rule (letters, digits, space, '-', '/'). "ToDo factor" is written only when
ToDo really acted, so its presence means "ToDo was on"; the other keys appear only off their defaults.
"ToDo applied" records the factors really used per pass, for the reader; it is not read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from ..settings import AUTO, FACTOR_FIELDS, TodoSettings

KEYS = {
    "factor": "ToDo factor",
    "factor_level2": "ToDo factor level 2",
    "method": "ToDo method",
    "start": "ToDo start",
    "stop": "ToDo stop",
    "hires_mode": "ToDo hires",
    "hires_factor": "ToDo hires factor",
}
APPLIED_KEY = "ToDo applied"
ALL_KEYS = (*KEYS.values(), APPLIED_KEY)


def format_value(field: str, value: object) -> str:
    """A setting as infotext shows it: factors as "auto" or "2", fractions as "0.6"."""
    if field in FACTOR_FIELDS:
        return "auto" if value == AUTO else f"{value:g}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_infotext(settings: TodoSettings, applied: str) -> dict[str, str]:
    """The infotext entries for settings that acted; `applied` says what was used, e.g. "2x/1x, hires 3x/1x"."""
    defaults = TodoSettings()
    out = {KEYS["factor"]: format_value("factor", settings.factor)}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "factor" or value == getattr(defaults, f.name):
            continue
        if f.name == "hires_factor" and settings.hires_mode != "own factor":
            continue
        out[KEYS[f.name]] = format_value(f.name, value)
    out[APPLIED_KEY] = applied
    return out


def from_infotext(params: Mapping[str, str]) -> tuple[TodoSettings | None, list[str]]:
    """Settings from parsed infotext, or None when the image was made without ToDo.

    With a value that makes no sense the whole ToDo block is rejected (None plus the problems), so a
    paste never restores settings that differ from what made the image.
    """
    if KEYS["factor"] not in params:
        return None, []
    raw = {name: params[key] for name, key in KEYS.items() if key in params}
    parsed = TodoSettings.lenient(raw)
    if parsed.problems:
        return None, parsed.problems
    return parsed.settings, []
