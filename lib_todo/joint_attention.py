"""ToDo inside a DiT's attention: the image keys/values downsampled on their grid, every other key kept whole.

One attention call of a DiT attends over L tokens, (B, heads, L, D), RoPE already applied to q and k. Where the
image sits among its keys is a `KeyLayout`: `start` tokens before it (text, a caption; per batch item where the
caption length differs), the image tokens of the target on a `frames x h x w` grid (row-major: frame, row,
column), and whatever follows (text, padding tokens, reference-image tokens). Flux: [text, image]; Neo's flipped
Flux and Ernie: [image, text]; Wan: [video]; Z-Image: [caption, pads, image, pads]; Qwen-Image-Edit:
[text, image, reference images].

ToDo keeps every query and every key/value outside the grid, and replaces the image keys/values by one per
`1 x f x f` cell: `f x f` within each frame, frames kept apart (cells at the bottom/right border are smaller when f
does not divide the side).

Balance: with the image keys shrunk f^2-fold while the other keys stay whole, softmax mass moves toward the
others. Adding log(count) to the logit of each kept image key, count being the number of image tokens its cell
holds, undoes that: if the image keys/values are constant on each cell, the output equals full attention
exactly (exp(s + log c) = c * exp(s): one key standing for c equal keys). How the bias reaches a kernel is
`key_bias`'s business; here it rides in an SDPA float mask.

What the methods do to RoPE'd keys:
- "nearest-exact" (cell centre) and "nearest" (cell top-left) keep real keys, each with its exact position.
- "avg-pool" averages rotated keys, so a kept key's logit is the MEAN of its cell's logits (q.mean(k) =
  mean(q.k)); the positional components that turn fast across a cell cancel out, so fine position is lost
  and, with balance, c * exp(mean s) <= sum exp(s) (Jensen): a cell weighs a little less than in full attention.
- "bilinear" blends the 2 x 2 nearest keys of its sample point, with the same effect as avg-pool in small.
- "max-pool" takes the element-wise max of rotated keys: not a rotation of anything, position is scrambled.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .downsample import downsample_kv
from .grid import downsampled_grid

NEAREST_PICK = {"nearest-exact": "centre", "nearest": "start"}
POOLS = {"avg-pool": F.avg_pool2d, "max-pool": F.max_pool2d}
# Balance on by default: it keeps the output 3-13x closer to full attention at no measurable cost (docs/dit.md).
DEFAULT_BALANCE = True
KNOWN_METHODS = ("nearest-exact", "nearest", "avg-pool", "bilinear", "max-pool")


@dataclass(frozen=True)
class ImageGrid:
    """The target image's tokens: `frames x h x w`, row-major (frame, row, column); one frame for an image."""

    frames: int
    h: int
    w: int

    @property
    def n(self) -> int:
        return self.frames * self.h * self.w

    @property
    def hw(self) -> tuple[int, int]:
        return (self.h, self.w)


@dataclass(frozen=True)
class KeyLayout:
    """Where the image grid sits among an attention call's `length` keys.

    start: tokens before the grid; an int, or one per batch item (a caption whose length differs per item).
    The grid's N tokens follow; the `length - start - N` tokens after it are kept whole too.
    """

    grid: ImageGrid
    start: int | tuple[int, ...]
    length: int

    def __post_init__(self) -> None:
        starts = self.start if isinstance(self.start, tuple) else (self.start,)
        if min(starts) < 0 or max(starts) + self.grid.n > self.length:
            raise ValueError(
                f"ToDo key layout: an image of {self.grid.frames}x{self.grid.h}x{self.grid.w} tokens starting at "
                f"{self.start} does not fit in {self.length} keys"
            )

    @property
    def per_item(self) -> bool:
        """Whether the image starts at a different index in each batch item."""
        return isinstance(self.start, tuple)

    def kept_length(self, factor: float) -> int:
        """Keys left after ToDo: the non-image ones plus one per cell."""
        oh, ow = downsampled_grid(self.grid.h, self.grid.w, factor)
        return self.length - self.grid.n + self.grid.frames * oh * ow


def text_first(txt_len: int, grid_hw: tuple[int, int], length: int | None = None) -> KeyLayout:
    """The layout of Flux-style joint attention: `txt_len` text keys, then an `h x w` image (then nothing)."""
    grid = ImageGrid(1, *grid_hw)
    return KeyLayout(grid, txt_len, txt_len + grid.n if length is None else length)


def cell_bounds(side: int, factor: float) -> tuple[list[int], list[int]]:
    """Starts and sizes of the cells along one grid side: cell i is [floor(i*f), min(floor((i+1)*f), side)).

    There are ceil(side/f) cells (as `downsampled_grid`), each at least one token; the last may be smaller.
    """
    n_cells = downsampled_grid(side, side, factor)[0]
    edges = [min(side, math.floor(i * factor + 1e-9)) for i in range(n_cells)] + [side]
    return edges[:-1], [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


def cell_counts(grid_hw: tuple[int, int], factor: float) -> torch.Tensor:
    """Image tokens each kept key stands for, (M,) float64, row-major over the ceil(h/f) x ceil(w/f) cells."""
    rows = torch.tensor(cell_bounds(grid_hw[0], factor)[1], dtype=torch.float64)
    cols = torch.tensor(cell_bounds(grid_hw[1], factor)[1], dtype=torch.float64)
    return (rows[:, None] * cols[None, :]).flatten()


def downsample_image_tokens(x: torch.Tensor, grid_hw: tuple[int, int], factor: float, method: str) -> torch.Tensor:
    """One token per cell: image tokens `x` (B, heads, N, D), N = h*w row-major, to (B, heads, M, D).

    An integer factor that divides both sides goes through `downsample_kv` on a (B*heads, N, D) or
    (B, N, heads*D) view (whichever is free), so DiT and UNet pick the same tokens there. Otherwise each cell
    of `cell_bounds` gives its token: its centre ("nearest-exact"), top-left ("nearest"), mean or max; bilinear
    samples F.interpolate's points at the ceil size.
    """
    _check_method(method)
    b, heads, n, d = x.shape
    h, w = grid_hw
    oh, ow = downsampled_grid(h, w, factor)
    if (int(factor) == factor and oh * factor == h and ow * factor == w) or method == "bilinear":
        return _through_downsample_kv(x, grid_hw, factor, method)
    planes = x.reshape(b * heads, h, w, d)
    if method in NEAREST_PICK:
        rows = _picks(h, factor, NEAREST_PICK[method], x.device)
        cols = _picks(w, factor, NEAREST_PICK[method], x.device)
        return planes.index_select(1, rows).index_select(2, cols).reshape(b, heads, oh * ow, d)
    if int(factor) == factor:  # cells of f x f with a smaller border: torch's ceil-mode pooling is exactly that
        k = int(factor)
        pooled = POOLS[method](planes.permute(0, 3, 1, 2), k, k, ceil_mode=True)
        return pooled.permute(0, 2, 3, 1).reshape(b, heads, oh * ow, d)
    reduce = torch.amax if method == "max-pool" else torch.mean
    planes = _reduce_cells(planes, 1, cell_bounds(h, factor), reduce)
    planes = _reduce_cells(planes, 2, cell_bounds(w, factor), reduce)
    return planes.reshape(b, heads, oh * ow, d)


def downsample_keys(
    k: torch.Tensor, v: torch.Tensor, layout: KeyLayout, factor: float, method: str = "nearest-exact"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values (B, heads, L, D) with the image grid downsampled: (B, heads, L', D) each, order kept.

    The nearest methods keep real tokens, so the result is one gather of `kept_index`; the others pool each
    frame's grid and put it back between the tokens before and after it.
    """
    _check_keys(k, layout)
    if method in NEAREST_PICK:
        index = on_device(("kept", layout, factor, method), k.device, torch.long, _kept_index_of)
        return gather_keys(k, index), gather_keys(v, index)
    if layout.per_item:
        items = [_one_item(layout, i) for i in range(k.shape[0])]
        pairs = [downsample_keys(k[i : i + 1], v[i : i + 1], item, factor, method) for i, item in enumerate(items)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    return _pooled(k, layout, factor, method), _pooled(v, layout, factor, method)


def kept_index(layout: KeyLayout, factor: float, method: str = "nearest-exact") -> torch.Tensor:
    """Index of the key each kept key comes from (or stands for: a pooled cell's first token), int64:
    (L',), or (B, L') when the image starts at a different index per item. Also selects a mask's key columns."""
    return _kept_index_of(("kept", layout, factor, method))


def kept_mask(mask: torch.Tensor | None, layout: KeyLayout, factor: float, method: str) -> torch.Tensor | None:
    """A host's attention mask with its key columns (the last dimension) taken at the kept keys.

    Masks of these hosts cover the text or caption padding (the image columns are all "attend"), so a cell's
    column stands for the whole cell.
    """
    if mask is None:
        return None
    return gather_mask(mask, on_device(("kept", layout, factor, method), mask.device, torch.long, _kept_index_of))


def key_bias(
    layout: KeyLayout, factor: float, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """The balance bias per kept key: 0 outside the grid, log(count) on the grid's cells; (L',), or (B, L') when
    the image starts at a different index per item. Made once per layout, device and dtype (an attention call
    must not copy it to the GPU again)."""
    return on_device(("bias", layout, factor), torch.device(device), dtype, _key_bias_of)


@functools.lru_cache(maxsize=256)
def bias_is_uniform(layout: KeyLayout, factor: float) -> bool:
    """Whether the balance bias is the same on every kept key (only image keys, all cells full): softmax ignores
    a constant, so balance changes nothing there."""
    if layout.per_item or layout.start or layout.length != layout.grid.n:
        return False
    # From the integer cell sizes, no tensor: a tensor's truth value would break a torch.compile graph at every
    # call. Counts (row size x column size) are all equal exactly when each side's cells are.
    rows, cols = (cell_bounds(side, factor)[1] for side in layout.grid.hw)
    return len(set(rows)) == 1 and len(set(cols)) == 1


def layout_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: KeyLayout,
    factor: float,
    method: str = "nearest-exact",
    balance: bool = DEFAULT_BALANCE,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention with ToDo on the image keys/values, on PyTorch SDPA: (B, heads, L, D) -> (B, heads, L, D).

    `mask`: the host's own mask (boolean "attend", or additive float), broadcastable to (B, heads, L, L);
    its key columns are taken at the kept keys and the balance bias adds to it. `scale`: the host's softmax
    scale (default 1/sqrt(D)). A factor that leaves the grid whole is plain SDPA, bit for bit.
    """
    if factor <= 1.0 or downsampled_grid(*layout.grid.hw, factor) == layout.grid.hw:
        _check_keys(k, layout)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    k_small, v_small = downsample_keys(k, v, layout, factor, method)
    small_mask = kept_mask(mask, layout, factor, method)
    if balance and not bias_is_uniform(layout, factor):
        bias = on_device(("bias", layout, factor), q.device, q.dtype, _key_bias_of)
        small_mask = add_key_bias(small_mask, bias, q.dtype)
    return F.scaled_dot_product_attention(q, k_small, v_small, attn_mask=small_mask, scale=scale)


def joint_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    txt_len: int,
    grid_hw: tuple[int, int],
    factor: float,
    method: str = "nearest-exact",
    balance: bool = DEFAULT_BALANCE,
    image_first: bool = False,
) -> torch.Tensor:
    """Flux-style joint attention with ToDo on the image keys/values: (B, heads, L, D) -> (B, heads, L, D).

    q, k, v: (B, heads, L, D), L = txt_len + h*w, RoPE applied to q and k; `grid_hw` = (h, w) of the image
    tokens; `image_first` for sequences that put the image before the text. A factor that leaves the grid
    whole (<= 1) is plain `F.scaled_dot_product_attention(q, k, v)`, bit for bit. With `balance`, each kept
    image key's logit gets + log(count) (see the module docstring); without it the call is plain SDPA over
    the shorter keys.
    """
    grid = ImageGrid(1, *grid_hw)
    layout = KeyLayout(grid, 0 if image_first else txt_len, txt_len + grid.n)
    return layout_attention(q, k, v, layout, factor, method, balance)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + bias) v for a per-key bias (S,): q (B, heads, L, D), k, v (B, heads, S, D)."""
    mask = bias.to(device=q.device, dtype=q.dtype).expand(1, 1, q.shape[2], -1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def add_key_bias(mask: torch.Tensor | None, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The balance bias (S,) or (B, S) added to a host mask (boolean "attend", or additive float), as one float
    mask broadcastable to (B, heads, L, S)."""
    bias = bias.view(1, 1, 1, -1) if bias.dim() == 1 else bias[:, None, None, :]
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype) + bias


def _pooled(x: torch.Tensor, layout: KeyLayout, factor: float, method: str) -> torch.Tensor:
    """(B, heads, L, D) with each frame's grid pooled to one token per cell, the other tokens around it."""
    grid, start = layout.grid, int(layout.start)
    b, heads, _, d = x.shape
    image = x[:, :, start : start + grid.n].reshape(b, heads * grid.frames, grid.h * grid.w, d)
    small = downsample_image_tokens(image, grid.hw, factor, method).reshape(b, heads, -1, d)
    return torch.cat([x[:, :, :start], small, x[:, :, start + grid.n :]], dim=2)


def _one_item(layout: KeyLayout, item: int) -> KeyLayout:
    return KeyLayout(layout.grid, layout.start[item], layout.length)  # type: ignore[index]


def gather_keys(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, heads, L, D) at `index` along L: (L',) for every item, or (B, L') per item."""
    if index.dim() == 1:
        return x.index_select(2, index)
    b, heads, _, d = x.shape
    return x.gather(2, index[:, None, :, None].expand(b, heads, -1, d))


def gather_mask(mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A mask's key columns (its last dimension) at `index`: (L',) for every item, or (B, L') per item."""
    if index.dim() == 1:
        return mask.index_select(-1, index)
    if mask.dim() < 3:  # (Lq, Lk): the same for every item
        mask = mask[None]
    mask = mask.expand(index.shape[0], *mask.shape[1:])
    index = index.view(index.shape[0], *([1] * (mask.dim() - 2)), -1).expand(*mask.shape[:-1], -1)
    return mask.gather(-1, index)


def _kept_index_of(key: tuple) -> torch.Tensor:
    _, layout, factor, method = key
    where = NEAREST_PICK.get(method, "start")
    grid = layout.grid
    rows = torch.tensor(_picks_of(("picks", grid.h, factor, where)))
    cols = torch.tensor(_picks_of(("picks", grid.w, factor, where)))
    frame = (rows[:, None] * grid.w + cols[None, :]).flatten()
    cells = torch.cat([frame + f * grid.h * grid.w for f in range(grid.frames)])
    starts = layout.start if layout.per_item else (layout.start,)
    rows_out = [
        torch.cat([torch.arange(s), s + cells, torch.arange(s + grid.n, layout.length)]) for s in starts
    ]  # fmt: skip
    return torch.stack(rows_out) if layout.per_item else rows_out[0]


def _key_bias_of(key: tuple) -> torch.Tensor:
    _, layout, factor = key
    grid = layout.grid
    cells = cell_counts(grid.hw, factor).log().repeat(grid.frames)
    starts = layout.start if layout.per_item else (layout.start,)
    rows = []
    for s in starts:
        after = layout.length - s - grid.n
        rows.append(torch.cat([torch.zeros(s, dtype=torch.float64), cells, torch.zeros(after, dtype=torch.float64)]))
    return torch.stack(rows) if layout.per_item else rows[0]


def _through_downsample_kv(x: torch.Tensor, grid_hw: tuple[int, int], factor: float, method: str) -> torch.Tensor:
    """downsample_kv on a free (B*heads, N, D) or (B, N, heads*D) view of (B, heads, N, D); back to that shape."""
    b, heads, n, d = x.shape
    h, w = grid_hw
    seq_major = x.transpose(1, 2)  # (B, N, heads, D): a free view when the tensor is stored (B, L, heads, D)
    if seq_major.stride(2) == d and seq_major.stride(3) == 1:
        small = downsample_kv(seq_major.reshape(b, n, heads * d), h, w, factor, method)
        return small.reshape(b, -1, heads, d).transpose(1, 2)
    small = downsample_kv(x.reshape(b * heads, n, d), h, w, factor, method)
    return small.reshape(b, heads, -1, d)


def _picks(side: int, factor: float, where: str, device: torch.device) -> torch.Tensor:
    return on_device(("picks", side, factor, where), device, torch.long, lambda key: torch.tensor(_picks_of(key)))


def _picks_of(key: tuple) -> list[int]:
    _, side, factor, where = key
    starts, sizes = cell_bounds(side, factor)
    return [s + (n // 2 if where == "centre" else 0) for s, n in zip(starts, sizes, strict=True)]


_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}


def on_device(key: tuple, device: torch.device, dtype: torch.dtype, make) -> torch.Tensor:
    """A small constant (indices, bias) made once per key, device and dtype: a host-to-GPU copy per attention
    call would make the host wait for the GPU."""
    full_key = (*key, str(device), dtype)
    if full_key not in _DEVICE_CACHE:
        if len(_DEVICE_CACHE) > 256:
            _DEVICE_CACHE.clear()
        _DEVICE_CACHE[full_key] = make(key).to(device=device, dtype=dtype)
    return _DEVICE_CACHE[full_key]


def _reduce_cells(x: torch.Tensor, dim: int, bounds: tuple[list[int], list[int]], reduce) -> torch.Tensor:
    """Reduce each cell along `dim` of x to one entry (a loop over cells: only non-integer factors get here)."""
    starts, sizes = bounds
    return torch.stack([reduce(x.narrow(dim, s, n), dim=dim) for s, n in zip(starts, sizes, strict=True)], dim=dim)


def _check_method(method: str) -> None:
    if method not in KNOWN_METHODS:
        raise ValueError(f"unknown downsampling method {method!r}; accepted: {', '.join(KNOWN_METHODS)}")


def _check_keys(x: torch.Tensor, layout: KeyLayout) -> None:
    if x.dim() != 4 or x.shape[2] != layout.length:
        raise ValueError(
            f"ToDo joint attention: got keys of shape {tuple(x.shape)}; accepted: (B, heads, L, D) with L = "
            f"{layout.length} (the image's {layout.grid.frames}x{layout.grid.h}x{layout.grid.w} tokens from "
            f"{layout.start}, and the rest)"
        )
