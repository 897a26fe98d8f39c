"""TodoSettings: strict validation with clear messages, the lenient parser, passes; auto factors."""

from __future__ import annotations

import math

import core_helpers as ch
import pytest

from lib_todo import AUTO, METHODS, TodoSettings, auto_factors
from lib_todo.layout import AttentionLayout, layout_of
from lib_todo.webui.infotext import from_infotext, to_infotext

BAD_VALUES = [
    ("factor", 0.5, "0.5", "1 to 8"),
    ("factor", 9, "9", "1 to 8"),
    ("factor", math.nan, "nan", "1 to 8"),
    ("factor", True, "True", "1 to 8"),
    ("factor", "x", "'x'", "1 to 8"),
    ("factor_level2", 9, "9", "1 to 8"),
    ("hires_factor", -2, "-2", "1 to 8"),
    ("method", "cubic", "'cubic'", "nearest-exact, avg-pool, bilinear, max-pool, nearest"),
    ("hires_mode", "sometimes", "'sometimes'", "same, own factor, off, only"),
    ("start", 1.5, "1.5", "from 0 to 1"),
    ("stop", "half", "'half'", "from 0 to 1"),
]


@pytest.mark.parametrize(("field", "value", "shown", "accepted"), BAD_VALUES)
def test_bad_value_error_names_field_value_accepted(field, value, shown, accepted):
    with pytest.raises(ValueError) as err:
        TodoSettings(**{field: value})
    message = str(err.value)
    assert f"ToDo {field}:" in message
    assert f"got {shown}" in message
    assert accepted in message


@pytest.mark.parametrize(("start", "stop"), [(0.5, 0.5), (0.8, 0.2)])
def test_start_not_below_stop_is_rejected(start, stop):
    with pytest.raises(ValueError) as err:
        TodoSettings(start=start, stop=stop)
    message = str(err.value)
    assert f"start={start:g}" in message and f"stop={stop:g}" in message
    assert "start/stop" in message and "below" in message  # what is accepted


def test_valid_values_are_canonical():
    s = TodoSettings(factor=2, factor_level2=1, method=" Nearest_Exact ", start=0, stop=1, hires_mode="OWN FACTOR")
    assert (s.factor, s.factor_level2, s.method, s.hires_mode) == (2.0, 1.0, "nearest-exact", "own factor")
    assert isinstance(s.factor, float) and isinstance(s.start, float)
    assert TodoSettings(method="avg_pool").method == "avg-pool"
    assert TodoSettings(factor=1, factor_level2=1).is_off
    assert not TodoSettings(factor=1).is_off  # level 2 stays auto


def test_nearest_is_its_own_method_not_an_alias():
    assert TodoSettings(method=" Nearest ").method == "nearest"
    assert TodoSettings(method="nearest-exact").method == "nearest-exact"
    assert TodoSettings.lenient({"method": "NEAREST"}) == (TodoSettings(method="nearest"), [])
    assert METHODS[:4] == ("nearest-exact", "avg-pool", "bilinear", "max-pool")  # appended: older UI choices keep place


@pytest.mark.parametrize("method", METHODS)
def test_every_method_survives_the_infotext_round_trip(method):
    settings = TodoSettings(factor=2, method=method)
    written = to_infotext(settings, "2x/1x")
    assert written.get("ToDo method") == (None if method == "nearest-exact" else method)  # defaults are left out
    assert from_infotext(written) == (settings, [])


@pytest.mark.parametrize("raw", ["2", 2, 2.0, "2x", " 2 "])
def test_lenient_reads_two(raw):
    parsed = TodoSettings.lenient({"factor": raw})
    assert parsed.problems == []
    assert parsed.settings.factor == 2.0


@pytest.mark.parametrize("raw", [None, "auto", "AUTO", 0])
def test_lenient_reads_auto(raw):
    parsed = TodoSettings.lenient({"factor": raw, "factor_level2": "3"})
    assert parsed.problems == []
    assert parsed.settings.factor == AUTO
    assert parsed.settings.factor_level2 == 3.0


@pytest.mark.parametrize(
    ("values", "field", "shown"),
    [
        ({"factor": "abc"}, "factor", "'abc'"),
        ({"factor": "20"}, "factor", "20"),
        ({"factor": True}, "factor", "True"),
        ({"method": "cubic"}, "method", "'cubic'"),
        ({"hires_mode": "sometimes"}, "hires_mode", "'sometimes'"),
        ({"stop": "1.5"}, "stop", "1.5"),
    ],
)
def test_lenient_reports_unusable_value(values, field, shown):
    parsed = TodoSettings.lenient({**values, "factor_level2": "2"})
    assert len(parsed.problems) == 1
    assert f"ToDo {field}" in parsed.problems[0] and shown in parsed.problems[0]
    assert getattr(parsed.settings, field) == getattr(TodoSettings(), field)  # replaced by the default
    assert parsed.settings.factor_level2 == 2.0  # the usable value is kept


def test_lenient_start_stop_conflict_and_unknown_key():
    parsed = TodoSettings.lenient({"start": "0.8", "stop": "0.2", "factor": "2", "speed": "fast"})
    assert parsed.settings == TodoSettings(factor=2)
    assert len(parsed.problems) == 2
    assert any("speed" in p for p in parsed.problems)
    assert any("start=0.8" in p and "stop=0.2" in p for p in parsed.problems)


def test_for_pass_hires_modes():
    base = TodoSettings(factor=2, hires_factor=3)
    assert base.for_pass(hires=False) is base and base.for_pass(hires=True) is base
    assert TodoSettings(hires_mode="off").for_pass(hires=True) is None
    assert TodoSettings(hires_mode="only").for_pass(hires=False) is None
    assert TodoSettings(hires_mode="only").for_pass(hires=True) is not None
    own = TodoSettings(factor=2, hires_mode="own factor", hires_factor=3).for_pass(hires=True)
    assert own.factor == 3.0


@pytest.fixture(scope="module")
def sd15_layout():
    return layout_of(ch.build("ldm-sd15"))


@pytest.fixture(scope="module")
def sdxl_layout():
    return layout_of(ch.build("ldm-sdxl"))


def _latent(px_h: int, px_w: int | None = None) -> tuple[int, int]:
    return px_h // 8, (px_w or px_h) // 8


@pytest.mark.parametrize(
    ("px", "expected"),
    [((512, 512), (1, 1)), ((1024, 1024), (2, 1)), ((1536, 1536), (3, 1)), ((2048, 2048), (4, 2))]
    + [((1000, 744), (1, 1)), ((768, 768), (1, 1)), ((4096, 4096), (4, 2))],
)
def test_auto_factors_sd15(px, expected, sd15_layout):
    assert sd15_layout == AttentionLayout((1, 2, 4, 8), 64)
    assert auto_factors(_latent(*px), sd15_layout) == expected


@pytest.mark.parametrize(("px", "expected"), [(1024, (1, 1)), (2048, (2, 2)), (3072, (3, 3))])
def test_auto_factors_sdxl(px, expected, sdxl_layout):
    assert sdxl_layout == AttentionLayout((2, 4), 128)
    assert auto_factors(_latent(px), sdxl_layout) == expected
