"""Joint text+image attention with ToDo (lib_todo.joint_attention) against attention written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lib_todo.joint_attention import (
    cell_bounds,
    cell_counts,
    downsample_image_kv,
    downsample_image_tokens,
    joint_attention,
)

HEADS, DIM = 3, 8


def _qkv(txt: int, h: int, w: int, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shape = (b, HEADS, txt + h * w, DIM)
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))


def _cell_ids(side: int, factor: int) -> list[int]:
    """Cell index of each position along a side: blocks of `factor`, the last one possibly shorter."""
    return [i // factor for i in range(side)]


def _constant_per_cell(x: torch.Tensor, txt: int, h: int, w: int, factor: int, image_first: bool) -> torch.Tensor:
    """x with every image token replaced by the first token of its f x f cell (text tokens untouched)."""
    x = x.clone()
    start = 0 if image_first else txt
    image = x[:, :, start : start + h * w].reshape(*x.shape[:2], h, w, -1)
    rows, cols = _cell_ids(h, factor), _cell_ids(w, factor)
    for r in range(h):
        for c in range(w):
            image[:, :, r, c] = image[:, :, rows[r] * factor, cols[c] * factor]
    return x


def _attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    return logits.softmax(-1) @ v


def _order(txt_part: torch.Tensor, img_part: torch.Tensor, image_first: bool) -> torch.Tensor:
    return torch.cat([img_part, txt_part] if image_first else [txt_part, img_part], dim=2)


@pytest.mark.parametrize("image_first", [False, True])
@pytest.mark.parametrize(("h", "w", "factor"), [(6, 8, 2), (7, 5, 2), (9, 10, 3), (5, 9, 4)])
@pytest.mark.parametrize("method", ["nearest-exact", "nearest", "avg-pool", "max-pool"])
def test_balance_is_exact_for_image_tokens_constant_per_cell(image_first, h, w, factor, method):
    """RoPE at identity, k and v constant on each cell: balanced ToDo equals full attention; unbalanced does not."""
    txt = 4
    q, k, v = _qkv(txt, h, w)
    k = _constant_per_cell(k, txt, h, w, factor, image_first)
    v = _constant_per_cell(v, txt, h, w, factor, image_first)
    full = F.scaled_dot_product_attention(q, k, v)
    args = (q, k, v, txt, (h, w), factor, method)
    balanced = joint_attention(*args, balance=True, image_first=image_first)
    unbalanced = joint_attention(*args, balance=False, image_first=image_first)
    assert torch.allclose(balanced, full, atol=1e-12, rtol=0)
    assert (unbalanced - full).abs().max() > 1e-3


@pytest.mark.parametrize("image_first", [False, True])
@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize(("h", "w", "factor"), [(8, 6, 2), (9, 12, 3), (7, 5, 2), (10, 7, 3)])
def test_nearest_exact_equals_attention_written_by_hand(image_first, balance, h, w, factor):
    """Kept keys: the centre token of each f x f cell (border cells: the centre of what is left)."""
    txt = 5
    q, k, v = _qkv(txt, h, w, seed=h * w)
    rows = [s + (min(s + factor, h) - s) // 2 for s in range(0, h, factor)]
    cols = [s + (min(s + factor, w) - s) // 2 for s in range(0, w, factor)]
    kept = [r * w + c for r in rows for c in cols]
    counts = [
        (min(r0 + factor, h) - r0) * (min(c0 + factor, w) - c0)
        for r0 in range(0, h, factor)
        for c0 in range(0, w, factor)
    ]
    img_at = 0 if image_first else txt
    txt_at = h * w if image_first else 0
    picked = [img_at + i for i in kept]
    k_small = _order(k[:, :, txt_at : txt_at + txt], k[:, :, picked], image_first)
    v_small = _order(v[:, :, txt_at : txt_at + txt], v[:, :, picked], image_first)
    log_counts = torch.tensor(counts, dtype=torch.float64).log() if balance else torch.zeros(len(counts))
    bias = _order(torch.zeros(1, 1, txt), log_counts.view(1, 1, -1).double(), image_first).view(1, 1, 1, -1)
    expected = _attention_by_hand(q, k_small, v_small, bias)
    got = joint_attention(q, k, v, txt, (h, w), factor, balance=balance, image_first=image_first)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [1, 1.0, 0.5])
@pytest.mark.parametrize("image_first", [False, True])
def test_factor_one_is_plain_attention_bit_for_bit(factor, image_first):
    q, k, v = (x.float() for x in _qkv(6, 4, 5))
    got = joint_attention(q, k, v, 6, (4, 5), factor, image_first=image_first)
    assert torch.equal(got, F.scaled_dot_product_attention(q, k, v))


def test_a_factor_that_keeps_the_grid_whole_is_plain_attention():
    q, k, v = (x.float() for x in _qkv(3, 2, 3))
    assert torch.equal(joint_attention(q, k, v, 3, (2, 3), 1.3), F.scaled_dot_product_attention(q, k, v))


def test_counts_cover_the_grid_and_border_cells_are_smaller():
    counts = cell_counts((7, 10), 3)
    assert counts.shape == (3 * 4,)
    assert counts.sum().item() == 70
    assert counts.view(3, 4).tolist()[0] == [9.0, 9.0, 9.0, 3.0]
    assert counts.view(3, 4).tolist()[2] == [3.0, 3.0, 3.0, 1.0]
    assert cell_bounds(7, 2.5) == ([0, 2, 5], [2, 3, 2])


def _positions(h: int, w: int) -> torch.Tensor:
    """(1, 1, h*w, 1) holding each token's place as row * 100 + column."""
    return torch.tensor([float(r * 100 + c) for r in range(h) for c in range(w)]).view(1, 1, -1, 1)


@pytest.mark.parametrize(
    ("h", "w", "factor", "method", "expected"),
    [
        (4, 6, 2, "nearest-exact", [101, 103, 105, 301, 303, 305]),
        (4, 6, 2, "nearest", [0, 2, 4, 200, 202, 204]),
        (5, 3, 2, "nearest-exact", [101, 102, 301, 302, 401, 402]),
        (5, 5, 2.5, "nearest-exact", [101, 103, 301, 303]),
        (4, 6, 2, "avg-pool", [50.5, 52.5, 54.5, 250.5, 252.5, 254.5]),
        (3, 3, 2, "avg-pool", [50.5, 52, 200.5, 202]),
        (3, 3, 2, "max-pool", [101, 102, 201, 202]),
        (5, 5, 2.5, "max-pool", [101, 104, 401, 404]),
    ],
)
def test_kept_tokens_and_their_positions(h, w, factor, method, expected):
    got = downsample_image_tokens(_positions(h, w), (h, w), factor, method).flatten().tolist()
    assert got == expected


@pytest.mark.parametrize("method", ["nearest-exact", "avg-pool", "bilinear", "max-pool"])
def test_sequence_major_storage_gives_the_same_tokens(method):
    """diffusers stores q/k/v as (B, L, heads, D); the (B, heads, L, D) view of it downsamples the same."""
    k = _qkv(0, 8, 6)[0]
    as_stored = k.transpose(1, 2).contiguous().transpose(1, 2)
    assert not as_stored.is_contiguous()
    assert torch.equal(
        downsample_image_tokens(as_stored, (8, 6), 2, method), downsample_image_tokens(k, (8, 6), 2, method)
    )


def test_downsample_image_kv_keeps_text_and_order():
    txt, h, w = 3, 4, 4
    _, k, v = _qkv(txt, h, w)
    k_small, v_small, counts = downsample_image_kv(k, v, txt, (h, w), 2)
    assert k_small.shape == v_small.shape == (2, HEADS, txt + 4, DIM)
    assert torch.equal(k_small[:, :, :txt], k[:, :, :txt])
    assert counts.tolist() == [4.0] * 4
    k_flip, _, _ = downsample_image_kv(k.flip(2), v, txt, (h, w), 2, image_first=True)
    assert torch.equal(k_flip[:, :, -txt:], k.flip(2)[:, :, -txt:])


def test_wrong_sequence_length_is_one_clear_error():
    q, k, v = _qkv(4, 3, 3)
    with pytest.raises(ValueError, match=r"L = text 5 \+ image 3x3 = 14") as err:
        joint_attention(q, k, v, 5, (3, 3), 2)
    assert "\n" not in str(err.value)


def test_unknown_method_names_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: nearest-exact, nearest, avg-pool"):
        downsample_image_tokens(_positions(4, 4), (4, 4), 2, "lanczos")
