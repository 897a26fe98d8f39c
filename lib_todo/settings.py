"""The one settings object of ToDo, validated once.

`TodoSettings` is what every backend, the webui script, the infotext and the benchmark share. A factor of
`AUTO` (0) means "choose from the generated size" (see `plan.auto_factors`); a factor of 1 means off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

AUTO = 0.0
MIN_FACTOR = 1.0
MAX_FACTOR = 8.0
# "nearest-exact" (ours, the default) takes the centre token of each cell; "nearest" takes the token the
# authors' code picks (F.interpolate(mode="nearest"): the top-left one). New methods go at the end: the UI
# dropdown lists them in this order.
METHODS = ("nearest-exact", "avg-pool", "bilinear", "max-pool", "nearest")
# Spellings other ports and users type, mapped to ours. "nearest" is a method of its own, not an alias.
METHOD_ALIASES = {
    "nearest_exact": "nearest-exact",
    "avg_pool": "avg-pool",
    "average": "avg-pool",
    "avgpool": "avg-pool",
    "max_pool": "max-pool",
    "maxpool": "max-pool",
}
HIRES_MODES = ("same", "own factor", "off", "only")
FACTOR_FIELDS = ("factor", "factor_level2", "hires_factor")
ACCEPTED = {
    "factor": "'auto' (or 0) or a number from 1 to 8",
    "method": ", ".join(METHODS),
    "start": "a fraction from 0 to 1, below stop",
    "stop": "a fraction from 0 to 1, above start",
    "hires_mode": ", ".join(HIRES_MODES),
}


def accepted(field: str) -> str:
    """What a field accepts, in words for error messages."""
    return ACCEPTED["factor" if field in FACTOR_FIELDS else field]


@dataclass(frozen=True)
class TodoSettings:
    """ToDo's settings.

    factor: key/value downsampling factor on the first attention level (AUTO = by size, 1 = off).
    factor_level2: the same for the second attention level.
    method: how the hidden states are downsampled on the latent grid (one of METHODS).
    start, stop: the step window, as fractions of each sampling pass (ToDo acts while start <= t < stop).
    hires_mode: what the hires-fix pass does: "same" settings, "own factor", "off", or "only" that pass.
    hires_factor: first-level factor of the hires pass in "own factor" mode.
    """

    factor: float = AUTO
    factor_level2: float = AUTO
    method: str = "nearest-exact"
    start: float = 0.0
    stop: float = 1.0
    hires_mode: str = "same"
    hires_factor: float = AUTO

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _validate(f.name, getattr(self, f.name)))
        if self.start >= self.stop:
            raise ValueError(
                f"ToDo start/stop: got start={self.start:g} and stop={self.stop:g}; accepted: start below stop"
            )

    @property
    def is_off(self) -> bool:
        """True when no level of a UNet can be downsampled, whatever the size."""
        return self.is_off_for(2)

    def is_off_for(self, levels: int) -> bool:
        """True when none of a model's first `levels` levels can be downsampled (a DiT has one level)."""
        return all(f == 1.0 for f in (self.factor, self.factor_level2)[:levels])

    def for_pass(self, hires: bool) -> TodoSettings | None:
        """The settings for one sampling pass, or None when ToDo sits that pass out."""
        if hires:
            if self.hires_mode == "off":
                return None
            if self.hires_mode == "own factor":
                return replace(self, factor=self.hires_factor)
            return self
        return None if self.hires_mode == "only" else self

    @classmethod
    def lenient(cls, values: Mapping[str, Any]) -> ParsedSettings:
        """Settings from untyped values ("2", 2, 2.0, "auto", None), as an API request or infotext gives them.

        None or a missing key takes the default. A value that cannot be used takes the default too, and is
        named in `problems` with what is accepted; callers decide whether to run with such settings.
        """
        clean: dict[str, Any] = {}
        problems: list[str] = []
        names = {f.name for f in fields(cls)}
        for key, raw in values.items():
            if key not in names:
                problems.append(f"unknown setting {key!r}; known: {', '.join(sorted(names))}")
                continue
            if raw is None:
                continue
            try:
                clean[key] = _validate(key, _coerce(key, raw))
            except ValueError as err:
                problems.append(str(err))
        try:
            return ParsedSettings(cls(**clean), problems)
        except ValueError as err:  # start/stop that are fine alone but not together
            problems.append(str(err))
            clean.pop("start", None)
            clean.pop("stop", None)
            return ParsedSettings(cls(**clean), problems)


class ParsedSettings(NamedTuple):
    """What `TodoSettings.lenient` made of untyped values: usable settings and what was replaced."""

    settings: TodoSettings
    problems: list[str]


def _validate(name: str, value: Any) -> Any:
    """One field's value in its canonical form, or ValueError naming the field, the value and what is accepted."""
    if name in FACTOR_FIELDS:
        return _check_factor(name, value)
    if name in ("start", "stop"):
        return _check_fraction(name, value)
    if name == "method":
        return _check_choice(name, value, METHODS, METHOD_ALIASES)
    return _check_choice(name, value, HIRES_MODES, {})


def _coerce(key: str, raw: Any) -> Any:
    if key in FACTOR_FIELDS:
        if isinstance(raw, str) and raw.strip().lower() == "auto":
            return AUTO
        return _number(key, raw)
    if key in ("start", "stop"):
        return _number(key, raw)
    return raw


def _number(key: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"ToDo {key}: got {raw!r}; accepted: {accepted(key)}")
    try:
        return float(raw.strip().rstrip("x")) if isinstance(raw, str) else float(raw)
    except ValueError:
        raise ValueError(f"ToDo {key}: got {raw!r}, not a number; accepted: {accepted(key)}") from None


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"ToDo {name}: got {value!r}; accepted: {accepted(name)}")
    value = float(value)
    if value != AUTO and not MIN_FACTOR <= value <= MAX_FACTOR:
        raise ValueError(f"ToDo {name}: got {value:g}; accepted: {accepted(name)}")
    return value


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"ToDo {name}: got {value!r}; accepted: {accepted(name)}")
    return float(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...], aliases: Mapping[str, str]) -> str:
    if isinstance(value, str):
        key = value.strip().lower()
        key = aliases.get(key, key)
        if key in choices:
            return key
    raise ValueError(f"ToDo {name}: got {value!r}; accepted: {accepted(name)}")
