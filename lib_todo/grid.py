"""Where tokens sit on the latent grid.

A UNet level at downsampling `ds` sees the latent `H x W` halved log2(ds) times, each time rounding up
(a stride-2 conv of an odd size rounds up): 1080 px -> latent 135 -> 68 -> 34 -> 17.
"""

from __future__ import annotations

import math


def level_grid(latent_hw: tuple[int, int], ds: int) -> tuple[int, int]:
    """Grid `h x w` of the level at downsampling `ds` (a power of two) for a latent `H x W`."""
    h, w = latent_hw
    while ds > 1:
        h, w, ds = -(-h // 2), -(-w // 2), ds // 2
    return h, w


def grid_for_tokens(n: int, latent_hw: tuple[int, int], levels: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The level among `levels` (downsampling values) whose grid holds exactly `n` tokens, as (ds, h, w).

    None when no level matches: the map was merged (ToMe), resized (Deep Shrink) or has a bank
    concatenated (reference-only); such a layer must be left alone.
    """
    for ds in levels:
        h, w = level_grid(latent_hw, ds)
        if h * w == n:
            return ds, h, w
    return None


def downsampled_grid(h: int, w: int, factor: float) -> tuple[int, int]:
    """The key/value grid for a `h x w` grid downsampled by `factor` (rounded up, at least 1 x 1)."""
    return max(1, math.ceil(h / factor - 1e-9)), max(1, math.ceil(w / factor - 1e-9))
