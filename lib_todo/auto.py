"""The auto rule: which factors "auto" means at a generated size.

For SD1.x the first-level factor is the authors' rule (their demo: 1024 px -> 2, 1536 -> 3, 2048 -> 4, i.e. the
generated side over the native side); level 2 at 2048 px and the SDXL rule are ours (see the README's auto table).
"""

from __future__ import annotations

import math

from .layout import AttentionLayout
from .settings import AUTO, TodoSettings

MAX_AUTO_FACTOR = 4


def auto_factors(latent_hw: tuple[int, int], layout: AttentionLayout) -> tuple[int, int]:
    """(level 1, level 2) factors for a latent `H x W`: ~ generated side / native side, 1 at or below native.

    SD1.5 at 1024 -> (2, 1), 1536 -> (3, 1), 2048 -> (4, 2). SDXL-like models use the same factor on
    both levels, because 60 of SDXL's 70 self-attention blocks sit on the second one. A DiT has one level
    (see `dit_auto_factor`).
    """
    ratio = math.sqrt(latent_hw[0] * latent_hw[1]) / layout.native_latent
    if layout.family == "dit":
        return dit_auto_factor(ratio), 1
    base = max(1, min(MAX_AUTO_FACTOR, math.floor(ratio + 0.1)))
    if layout.is_sdxl_like:
        return base, base
    return base, max(1, base // 2)


def dit_auto_factor(ratio: float) -> int:
    """A DiT's factor for generated side / native side `ratio`: the ratio rounded half up, 1 up to 1.5x native.

    Flux (native 1024 px): off below 1536 px, 2 from 1536, 3 from 2560, 4 from 3584 px. Factor 2 already takes
    most of what the bound allows at 1536-2048 px (README, Flux section), so higher factors wait for larger images.
    """
    return max(1, min(MAX_AUTO_FACTOR, math.floor(ratio + 0.5 + 1e-9)))


def resolve_factors(settings: TodoSettings, latent_hw: tuple[int, int], layout: AttentionLayout) -> tuple[float, float]:
    """The factors for level 1 and level 2 at this latent size (AUTO resolved)."""
    auto = auto_factors(latent_hw, layout)
    f1 = auto[0] if settings.factor == AUTO else settings.factor
    f2 = auto[1] if settings.factor_level2 == AUTO else settings.factor_level2
    return float(f1), float(f2)
