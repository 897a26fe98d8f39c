"""ToDo inside a DiT's attention (lib_todo.joint_attention: key layouts, downsampled keys, masks, the balance bias;
lib_todo.balance: the bias in a head channel) against attention written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lib_todo.balance import padded_dim, with_bias_channel
from lib_todo.joint_attention import (
    ImageGrid,
    KeyLayout,
    bias_is_uniform,
    cell_bounds,
    cell_counts,
    downsample_image_tokens,
    downsample_keys,
    joint_attention,
    kept_index,
    kept_mask,
    key_bias,
    layout_attention,
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


def test_downsample_keys_keeps_the_other_tokens_and_their_order():
    txt, h, w = 3, 4, 4
    _, k, v = _qkv(txt, h, w)
    layout = KeyLayout(ImageGrid(1, h, w), txt, txt + h * w)
    k_small, v_small = downsample_keys(k, v, layout, 2)
    assert k_small.shape == v_small.shape == (2, HEADS, txt + 4, DIM)
    assert torch.equal(k_small[:, :, :txt], k[:, :, :txt])
    flipped = KeyLayout(ImageGrid(1, h, w), 0, txt + h * w)
    k_flip, _ = downsample_keys(k.flip(2), v, flipped, 2)
    assert torch.equal(k_flip[:, :, -txt:], k.flip(2)[:, :, -txt:])


def _hand_keep(starts: list[int], frames: int, h: int, w: int, factor: int, length: int) -> list[list[int]]:
    """Per item: the tokens before the image, each frame's cell centres (frame by frame), the tokens after."""
    rows = [s + (min(s + factor, h) - s) // 2 for s in range(0, h, factor)]
    cols = [s + (min(s + factor, w) - s) // 2 for s in range(0, w, factor)]
    out = []
    for start in starts:
        cells = [start + f * h * w + r * w + c for f in range(frames) for r in rows for c in cols]
        out.append(list(range(start)) + cells + list(range(start + frames * h * w, length)))
    return out


@pytest.mark.parametrize(("frames", "h", "w", "factor"), [(1, 6, 8, 2), (3, 5, 4, 2), (2, 7, 9, 3)])
@pytest.mark.parametrize("starts", [[4, 4], [0, 0], [2, 7]])
def test_kept_keys_per_frame_with_tokens_before_and_after(frames, h, w, factor, starts):
    """Video: cells of 1 x f x f, frames apart; tokens before (per item where the caption length differs) and
    after the grid (padding, reference tokens) are kept whole, in place."""
    after = 3
    length = max(starts) + frames * h * w + after
    layout = KeyLayout(ImageGrid(frames, h, w), tuple(starts) if starts[0] != starts[1] else starts[0], length)
    g = torch.Generator().manual_seed(frames * h)
    k, v = (torch.randn(2, HEADS, length, DIM, generator=g) for _ in range(2))
    keep = _hand_keep(starts, frames, h, w, factor, length)
    k_small, v_small = downsample_keys(k, v, layout, factor)
    for item in range(2):
        assert torch.equal(k_small[item], k[item][:, keep[item]])
        assert torch.equal(v_small[item], v[item][:, keep[item]])
    assert k_small.shape[2] == layout.kept_length(factor)


@pytest.mark.parametrize("method", ["avg-pool", "max-pool", "bilinear"])
def test_pooled_methods_pool_each_frame_and_keep_the_rest(method):
    frames, h, w, before, after = 2, 4, 6, 3, 2
    length = before + frames * h * w + after
    x = torch.randn(1, HEADS, length, DIM, generator=torch.Generator().manual_seed(3))
    layout = KeyLayout(ImageGrid(frames, h, w), before, length)
    got, _ = downsample_keys(x, x, layout, 2, method)
    per_frame = [
        downsample_image_tokens(x[:, :, before + f * h * w : before + (f + 1) * h * w], (h, w), 2, method)
        for f in range(frames)
    ]
    expected = torch.cat([x[:, :, :before], *per_frame, x[:, :, before + frames * h * w :]], dim=2)
    assert torch.equal(got, expected)
    per_item = KeyLayout(ImageGrid(frames, h, w), (before, before), length)
    assert torch.equal(
        downsample_keys(x.expand(2, -1, -1, -1), x.expand(2, -1, -1, -1), per_item, 2, method)[0][1], got[0]
    )


def test_mask_columns_follow_the_kept_keys():
    """A host mask (boolean, or float; any of its leading shapes) keeps the columns of the kept keys."""
    layout = KeyLayout(ImageGrid(1, 4, 4), (2, 5), 2 + 16 + 5)
    index = kept_index(layout, 2)
    mask = torch.rand(2, 1, 1, layout.length) > 0.3
    got = kept_mask(mask, layout, 2, "nearest-exact")
    for item in range(2):
        assert torch.equal(got[item, 0, 0], mask[item, 0, 0, index[item]])
    square = torch.randn(layout.length, layout.length)  # (Lq, Lk), the same for both items
    assert torch.equal(kept_mask(square, layout, 2, "nearest-exact")[1], square[:, index[1]])
    assert kept_mask(None, layout, 2, "nearest-exact") is None


def test_key_bias_and_when_it_is_uniform():
    grid = ImageGrid(2, 4, 5)
    layout = KeyLayout(grid, 3, 3 + grid.n + 1)
    bias = key_bias(layout, 2)
    counts = cell_counts((4, 5), 2).log()
    assert torch.equal(bias, torch.cat([torch.zeros(3), counts, counts, torch.zeros(1)]).double())
    assert not bias_is_uniform(layout, 2)
    assert bias_is_uniform(KeyLayout(ImageGrid(3, 4, 6), 0, 72), 2)  # video only, every cell full: a constant
    assert not bias_is_uniform(KeyLayout(ImageGrid(1, 5, 6), 0, 30), 2)  # border cells hold fewer tokens
    assert not bias_is_uniform(KeyLayout(ImageGrid(1, 4, 6), 0, 30), 2)  # tokens after the image


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_layout_attention_equals_attention_written_by_hand(mask_kind):
    """Per-item image starts, frames, tokens after, a host mask on the non-image keys, the host's own scale."""
    frames, h, w, factor, starts, after = 2, 5, 6, 2, (3, 6), 4
    length = max(starts) + frames * h * w + after
    layout = KeyLayout(ImageGrid(frames, h, w), starts, length)
    q, k, v = (
        torch.randn(2, HEADS, length, DIM, generator=torch.Generator().manual_seed(i)).double() for i in range(3)
    )
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(2, 1, 1, length, dtype=torch.bool)
        mask[0, ..., :2] = False  # padding of the first item's caption
    elif mask_kind == "float":
        mask = torch.zeros(2, 1, length, length, dtype=torch.float64)
        mask[1, ..., -2:] = -1.5
    scale = 0.3
    got = layout_attention(q, k, v, layout, factor, mask=mask, scale=scale)
    keep = _hand_keep(list(starts), frames, h, w, factor, length)
    counts = cell_counts((h, w), factor).log()
    for item in range(2):
        start = starts[item]
        bias = torch.cat([torch.zeros(start), counts, counts, torch.zeros(length - start - frames * h * w)]).double()
        logits = q[item] @ k[item][:, keep[item]].transpose(-1, -2) * scale + bias
        if mask_kind == "bool":
            logits = logits.masked_fill(~mask[item][..., keep[item]], float("-inf"))
        elif mask_kind == "float":
            logits = logits + mask[item][..., keep[item]]
        expected = logits.softmax(-1) @ v[item][:, keep[item]]
        assert torch.allclose(got[item], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("d", [8, 16, 96, 128])
@pytest.mark.parametrize("kernel_takes_scale", [True, False])
def test_bias_in_a_head_channel_equals_the_bias_in_a_mask(d, kernel_takes_scale):
    """q', k', v' padded to a multiple of 8 give the biased logits under the kernel's scale, per item too."""
    g = torch.Generator().manual_seed(d)
    q = torch.randn(2, 3, 10, d, generator=g).double()
    k, v = (torch.randn(2, 3, 7, d, generator=g).double() for _ in range(2))
    for bias in (torch.randn(7, generator=g).double(), torch.randn(2, 7, generator=g).double()):
        mask = bias.view(1, 1, 1, -1) if bias.dim() == 1 else bias[:, None, None, :]
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        qw, kw, vw, scale = with_bias_channel(q, k, v, bias, None, kernel_takes_scale)
        assert qw.shape[-1] == padded_dim(d) and padded_dim(d) % 8 == 0 and padded_dim(d) > d
        got = F.scaled_dot_product_attention(qw, kw, vw, scale=scale if kernel_takes_scale else None)
        assert torch.allclose(got[..., :d], expected, atol=1e-12, rtol=0)
        assert torch.equal(got[..., d:], torch.zeros_like(got[..., d:]))


def test_wrong_sequence_length_is_one_clear_error():
    q, k, v = _qkv(4, 3, 3)
    with pytest.raises(ValueError, match=r"L = 14 \(the image's 1x3x3 tokens from 5") as err:
        joint_attention(q, k, v, 5, (3, 3), 2)
    assert "\n" not in str(err.value)


def test_unknown_method_names_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: nearest-exact, nearest, avg-pool"):
        downsample_image_tokens(_positions(4, 4), (4, 4), 2, "lanczos")


def test_bias_is_uniform_agrees_with_the_cell_counts_and_keeps_a_compiled_graph_whole():
    """Decided from integer cell sizes: the same answer as comparing the counts, and no tensor truth value
    (which would split a torch.compile graph at every attention call)."""
    for h, w in [(4, 6), (5, 6), (7, 7), (8, 8), (9, 12), (1, 3)]:
        for factor in (2, 3, 4, 2.5):
            counts = cell_counts((h, w), factor)
            expected = bool((counts == counts[0]).all())
            assert bias_is_uniform(KeyLayout(ImageGrid(2, h, w), 0, 2 * h * w), factor) == expected, (h, w, factor)
    layout = KeyLayout(ImageGrid(1, 6, 8), 0, 48)

    def step(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if bias_is_uniform(layout, 3) else x + 1

    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(torch.ones(3))
    assert explained.graph_break_count == 0, explained.break_reasons
