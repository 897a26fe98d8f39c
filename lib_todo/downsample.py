"""Downsampling the hidden states that keys and values are computed from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grid import downsampled_grid

NEAREST_METHODS = ("nearest-exact", "nearest")


def downsample_kv(x: torch.Tensor, h: int, w: int, factor: float, method: str = "nearest-exact") -> torch.Tensor:
    """Downsample tokens `x` of shape (B, N, C), N = h*w on a row-major `h x w` grid, to (B, M, C).

    M = ceil(h/f) * ceil(w/f). Both nearest methods pick the tokens F.interpolate picks for that size:
    "nearest-exact" the centre of each cell (source index floor((i + 0.5) * h / oh)), "nearest" its top-left
    (floor(i * h / oh), the authors' choice). For an integer factor that divides the grid that is a strided
    view plus one copy (index i*f + f//2, resp. i*f); other cases go through F.interpolate or pooling on a
    (B, C, h, w) view.
    """
    b, n, c = x.shape
    oh, ow = downsampled_grid(h, w, factor)
    grid = x.reshape(b, h, w, c)
    step = int(factor)
    if method in NEAREST_METHODS and step == factor and oh * step == h and ow * step == w:
        offset = step // 2 if method == "nearest-exact" else 0  # the picked token's place in its f x f cell
        return grid[:, offset::step, offset::step, :].reshape(b, oh * ow, c)
    planes = grid.permute(0, 3, 1, 2)
    if method in NEAREST_METHODS:
        out = F.interpolate(planes, size=(oh, ow), mode=method)
    elif method == "bilinear":
        out = F.interpolate(planes, size=(oh, ow), mode="bilinear", align_corners=False)
    elif method == "avg-pool":
        out = F.adaptive_avg_pool2d(planes, (oh, ow))
    elif method == "max-pool":
        out = F.adaptive_max_pool2d(planes, (oh, ow))
    else:
        raise ValueError(f"unknown downsampling method {method!r}")
    return out.permute(0, 2, 3, 1).reshape(b, oh * ow, c)
