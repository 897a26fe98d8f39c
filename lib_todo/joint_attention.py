"""ToDo for joint text+image attention (Flux-family DiTs): image keys/values downsampled on their grid.

A DiT block attends over one sequence of L = T + N tokens: T text tokens and N = h*w image tokens, row-major
on the `h x w` patch grid, text first (Flux in diffusers and Forge) or image first (Forge Neo's
`flipped_img_txt`). Tensors here are (B, heads, L, D) with RoPE already applied to q and k.

ToDo keeps every query and every text key/value, and replaces the image keys/values by one per cell of an
`f x f` partition of the grid (cells at the bottom/right border are smaller when f does not divide the side).

Balance: with the image keys shrunk f^2-fold while the text keys stay whole, softmax mass moves toward the
text. Adding log(count) to the logit of each kept image key, count being the number of image tokens its cell
holds, undoes that: if the image keys/values are constant on each cell, the output equals full attention
exactly (exp(s + log c) = c * exp(s): one key standing for c equal keys).

What the methods do to RoPE'd keys:
- "nearest-exact" (cell centre) and "nearest" (cell top-left) keep real keys, each with its exact position.
- "avg-pool" averages rotated keys, so a kept key's logit is the MEAN of its cell's logits (q.mean(k) =
  mean(q.k)); the positional components that turn fast across a cell cancel out, so fine position is lost
  and, with balance, c * exp(mean s) <= sum exp(s) (Jensen): a cell weighs a little less than in full attention.
- "bilinear" blends the 2 x 2 nearest keys of its sample point, with the same effect as avg-pool in small.
- "max-pool" takes the element-wise max of rotated keys: not a rotation of anything, position is scrambled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .downsample import downsample_kv
from .grid import downsampled_grid

NEAREST_PICK = {"nearest-exact": "centre", "nearest": "start"}
POOLS = {"avg-pool": F.avg_pool2d, "max-pool": F.max_pool2d}
# Balance on by default: it keeps the output 3-13x closer to full attention at no measurable cost (README, Flux).
DEFAULT_BALANCE = True
KNOWN_METHODS = ("nearest-exact", "nearest", "avg-pool", "bilinear", "max-pool")


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
    if method not in KNOWN_METHODS:
        raise ValueError(f"unknown downsampling method {method!r}; accepted: {', '.join(KNOWN_METHODS)}")
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


def downsample_image_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    txt_len: int,
    grid_hw: tuple[int, int],
    factor: float,
    method: str = "nearest-exact",
    image_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys and values with the image part downsampled: (B, heads, T + M, D) each, plus the counts (M,).

    `k`, `v`: (B, heads, T + h*w, D), RoPE applied to k. The token order is kept (text first unless
    `image_first`). counts[i] = number of image tokens kept image key i stands for (float64, see cell_counts).
    """
    _check_length(k, txt_len, grid_hw)
    n_img = grid_hw[0] * grid_hw[1]
    out = []
    for x in (k, v):
        text, image = _split(x, txt_len, n_img, image_first)
        small = downsample_image_tokens(image, grid_hw, factor, method)
        out.append(torch.cat([small, text] if image_first else [text, small], dim=2))
    return out[0], out[1], cell_counts(grid_hw, factor)


def key_bias(txt_len: int, counts: torch.Tensor, image_first: bool = False) -> torch.Tensor:
    """The balance bias per kept key, (T + M,) float64: 0 for text keys, log(count) for image keys."""
    text = torch.zeros(txt_len, dtype=torch.float64)
    image = counts.log()
    return torch.cat([image, text] if image_first else [text, image])


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
    """Joint attention with ToDo on the image keys/values: (B, heads, L, D) -> (B, heads, L, D).

    q, k, v: (B, heads, L, D), L = txt_len + h*w, RoPE applied to q and k; `grid_hw` = (h, w) of the image
    tokens; `image_first` for sequences that put the image before the text. A factor that leaves the grid
    whole (<= 1) is plain `F.scaled_dot_product_attention(q, k, v)`, bit for bit. With `balance`, each kept
    image key's logit gets + log(count) (see the module docstring); without it the call is plain SDPA over
    the shorter keys.
    """
    if factor <= 1.0 or downsampled_grid(*grid_hw, factor) == tuple(grid_hw):
        _check_length(k, txt_len, grid_hw)
        return F.scaled_dot_product_attention(q, k, v)
    k_small, v_small, _ = downsample_image_kv(k, v, txt_len, grid_hw, factor, method, image_first)
    if not balance:
        return F.scaled_dot_product_attention(q, k_small, v_small)
    bias = _on_device(("bias", txt_len, tuple(grid_hw), factor, image_first), q.device, q.dtype, _bias_of)
    return F.scaled_dot_product_attention(q, k_small, v_small, attn_mask=bias.expand(1, 1, q.shape[2], -1))


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + bias) v for a per-key bias (S,): q (B, heads, L, D), k, v (B, heads, S, D)."""
    mask = bias.to(device=q.device, dtype=q.dtype).expand(1, 1, q.shape[2], -1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


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
    return _on_device(("picks", side, factor, where), device, torch.long, _picks_of)


def _picks_of(key: tuple) -> torch.Tensor:
    _, side, factor, where = key
    starts, sizes = cell_bounds(side, factor)
    return torch.tensor([s + (n // 2 if where == "centre" else 0) for s, n in zip(starts, sizes, strict=True)])


def _bias_of(key: tuple) -> torch.Tensor:
    _, txt_len, grid_hw, factor, image_first = key
    return key_bias(txt_len, cell_counts(grid_hw, factor), image_first)


_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}


def _on_device(key: tuple, device: torch.device, dtype: torch.dtype, make) -> torch.Tensor:
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


def _split(x: torch.Tensor, txt_len: int, n_img: int, image_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(text, image) parts of (B, heads, L, D) along L."""
    if image_first:
        return x[:, :, n_img:], x[:, :, :n_img]
    return x[:, :, :txt_len], x[:, :, txt_len:]


def _check_length(x: torch.Tensor, txt_len: int, grid_hw: tuple[int, int]) -> None:
    expected = txt_len + grid_hw[0] * grid_hw[1]
    if x.dim() != 4 or x.shape[2] != expected:
        raise ValueError(
            f"ToDo joint attention: got keys of shape {tuple(x.shape)}; accepted: (B, heads, L, D) with "
            f"L = text {txt_len} + image {grid_hw[0]}x{grid_hw[1]} = {expected}"
        )
