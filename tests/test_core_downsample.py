"""downsample_kv against torch's own resampling, and the grid arithmetic."""

from __future__ import annotations

import core_helpers as ch
import pytest
import torch
import torch.nn.functional as F

from lib_todo import METHODS, downsample_kv, downsampled_grid, grid_for_tokens, level_grid


def _tokens(h: int, w: int, b: int = 2, c: int = 5) -> torch.Tensor:
    return torch.randn(b, h * w, c, generator=torch.Generator().manual_seed(h * 100 + w))


def _positions(h: int, w: int) -> torch.Tensor:
    """One channel holding each token's place on the grid as row * 10 + column."""
    return torch.tensor([[[float(r * 10 + c)] for r in range(h) for c in range(w)]])


def test_nearest_exact_picks_cell_centres_row_major():
    picked = downsample_kv(_positions(4, 6), 4, 6, 2).flatten().tolist()
    assert picked == [11.0, 13.0, 15.0, 31.0, 33.0, 35.0]


def test_nearest_picks_cell_top_left_as_the_authors():
    picked = downsample_kv(_positions(4, 6), 4, 6, 2, "nearest").flatten().tolist()
    assert picked == [0.0, 2.0, 4.0, 20.0, 22.0, 24.0]
    picked3 = downsample_kv(_positions(6, 6), 6, 6, 3, "nearest").flatten().tolist()
    assert picked3 == [0.0, 3.0, 30.0, 33.0]


@pytest.mark.parametrize("method", ["nearest", "nearest-exact"])
@pytest.mark.parametrize(
    ("h", "w", "factor"), [(12, 24, 2), (24, 12, 3), (36, 36, 4), (9, 7, 2), (13, 10, 3), (7, 5, 2.5)]
)
def test_nearest_methods_equal_interpolate_of_their_mode(method, h, w, factor):
    """Divisible grids take the strided path, the others F.interpolate at the ceil size: same tokens either way."""
    x = _tokens(h, w)
    size = (ch.ceil_div(h, factor), ch.ceil_div(w, factor))
    assert torch.equal(downsample_kv(x, h, w, factor, method), ch.interpolate_tokens(x, h, w, size, mode=method))


@pytest.mark.parametrize("method", ["nearest", "nearest-exact"])
def test_nearest_on_divisible_grid_is_strided_not_interpolated(method, monkeypatch):
    """The fast path: an integer factor that divides the grid never calls F.interpolate."""
    x = _tokens(12, 24)
    expected = downsample_kv(x, 12, 24, 3, method)

    def refuse(*args, **kwargs):
        raise AssertionError("F.interpolate called on a divisible grid")

    monkeypatch.setattr(F, "interpolate", refuse)
    assert torch.equal(downsample_kv(x, 12, 24, 3, method), expected)
    with pytest.raises(AssertionError, match="divisible"):
        downsample_kv(_tokens(13, 10), 13, 10, 3, method)  # the slow path really goes through F.interpolate


def test_nearest_and_nearest_exact_are_different_methods():
    x = _tokens(16, 16)
    assert not torch.equal(downsample_kv(x, 16, 16, 2, "nearest"), downsample_kv(x, 16, 16, 2, "nearest-exact"))


@pytest.mark.parametrize(("method", "reference"), [("avg-pool", F.avg_pool2d), ("max-pool", F.max_pool2d)])
def test_pooling_equals_torch_pooling(method, reference):
    h, w, f = 8, 12, 2
    x = _tokens(h, w)
    planes = x.transpose(1, 2).reshape(2, 5, h, w)
    expected = reference(planes, f).flatten(2).transpose(1, 2)
    assert torch.allclose(downsample_kv(x, h, w, f, method), expected, atol=1e-6)


def test_bilinear_equals_interpolate():
    h, w = 9, 14
    x = _tokens(h, w)
    expected = ch.interpolate_tokens(x, h, w, (5, 7), mode="bilinear")
    assert torch.allclose(downsample_kv(x, h, w, 2, "bilinear"), expected, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("h", "w", "factor"), [(9, 9, 2), (17, 30, 2), (13, 10, 3), (5, 7, 4), (68, 120, 3), (7, 5, 2.5)]
)
def test_non_divisible_grid_shape_is_ceil(method, h, w, factor):
    x = _tokens(h, w, b=3, c=4)
    out = downsample_kv(x, h, w, factor, method)
    assert out.shape == (3, ch.ceil_div(h, factor) * ch.ceil_div(w, factor), 4)
    assert torch.isfinite(out).all()


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="cubic"):
        downsample_kv(_tokens(4, 4), 4, 4, 2, "cubic")


def test_level_grid_1080p():
    assert [level_grid((135, 240), ds) for ds in (1, 2, 4, 8)] == [(135, 240), (68, 120), (34, 60), (17, 30)]
    assert [level_grid((1080 // 8, 8), ds)[0] for ds in (1, 2, 4, 8)] == [135, 68, 34, 17]
    for hw in [(135, 240), (65, 45), (9, 9), (125, 93)]:
        for ds in (1, 2, 4, 8):
            assert level_grid(hw, ds) == ch.grid_after(hw, ds)


def test_downsampled_grid_rounds_up():
    assert downsampled_grid(135, 240, 2) == (68, 120)
    assert downsampled_grid(9, 9, 2) == (5, 5)
    assert downsampled_grid(3, 2, 4) == (1, 1)
    assert downsampled_grid(12, 12, 3) == (4, 4)  # no float error on an exact division


def test_grid_for_tokens_matches_levels_only():
    assert grid_for_tokens(68 * 120, (135, 240), (1, 2)) == (2, 68, 120)
    assert grid_for_tokens(135 * 240, (135, 240), (1, 2)) == (1, 135, 240)
    assert grid_for_tokens(34 * 60, (135, 240), (1, 2)) is None  # a level ToDo does not act on
    assert grid_for_tokens(135 * 240 // 2, (135, 240), (1, 2)) is None  # ToMe-merged tokens
