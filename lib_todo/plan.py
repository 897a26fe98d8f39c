"""Which layer gets which factor: the per-call decision every backend shares.

Levels are counted from the highest-resolution UNet level that has attention: SD1.x/SD2.x attend at
/1, /2, /4, /8, so level 1 is /1; SDXL attends at /2 and /4 only, so its level 1 is /2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .grid import downsampled_grid, grid_for_tokens
from .settings import AUTO, TodoSettings

MAX_AUTO_FACTOR = 4


@dataclass(frozen=True)
class UnetLayout:
    """What ToDo needs to know of a UNet.

    attention_ds: the downsampling values that have self-attention, highest resolution first.
    native_latent: the side of the latent the model was trained at (64 for SD1.x, 128 for SDXL).
    """

    attention_ds: tuple[int, ...]
    native_latent: int

    @property
    def level_ds(self) -> tuple[int, ...]:
        """Downsampling of level 1 and level 2 (the levels ToDo acts on)."""
        return self.attention_ds[:2]

    @property
    def is_sdxl_like(self) -> bool:
        """No attention at full resolution: most self-attention sits on the second level."""
        return bool(self.attention_ds) and self.attention_ds[0] >= 2


def layout_for(attention_ds: set[int] | tuple[int, ...], native_px: int | None = None) -> UnetLayout:
    """A layout from the attention levels found in a UNet; `native_px` overrides the native size guess."""
    levels = tuple(sorted(attention_ds))
    if native_px:
        native = native_px // 8
    else:
        native = 128 if levels and levels[0] >= 2 else 64
    return UnetLayout(levels, native)


def auto_factors(latent_hw: tuple[int, int], layout: UnetLayout) -> tuple[int, int]:
    """The authors' rule: factor ~ generated side / native side, 1 at or below native size.

    SD1.5 at 1024 -> (2, 1), 1536 -> (3, 1), 2048 -> (4, 2). SDXL-like models use the same factor on
    both levels, because 60 of SDXL's 70 self-attention blocks sit on the second one.
    """
    ratio = math.sqrt(latent_hw[0] * latent_hw[1]) / layout.native_latent
    base = max(1, min(MAX_AUTO_FACTOR, math.floor(ratio + 0.1)))
    if layout.is_sdxl_like:
        return base, base
    return base, max(1, base // 2)


def resolve_factors(settings: TodoSettings, latent_hw: tuple[int, int], layout: UnetLayout) -> tuple[float, float]:
    """The factors for level 1 and level 2 at this latent size (AUTO resolved)."""
    auto = auto_factors(latent_hw, layout)
    f1 = auto[0] if settings.factor == AUTO else settings.factor
    f2 = auto[1] if settings.factor_level2 == AUTO else settings.factor_level2
    return float(f1), float(f2)


class TodoState:
    """Live state of one installed ToDo: settings, layout, step window and what was really applied.

    Hooks call `target(n, latent_hw)` per attention call; it is a dict lookup after the first call of a
    size, and never touches the GPU.
    """

    def __init__(self, settings: TodoSettings, layout: UnetLayout) -> None:
        self.settings = settings
        self.layout = layout
        self.latent_hw: tuple[int, int] | None = None
        self.set_progress(0.0)  # until told otherwise, sampling is at its first step
        self.applied: dict[int, float] = {}
        self._targets: dict[tuple[int, int, int], tuple[int, int, float, int] | None] = {}

    def set_progress(self, fraction: float) -> None:
        """Tell how far the current sampling pass is (0 at its first step); gates the step window."""
        s = self.settings
        self.active = s.start <= fraction and (fraction < s.stop or s.stop >= 1.0)

    def target(self, n: int, latent_hw: tuple[int, int] | None) -> tuple[int, int, float] | None:
        """(h, w, factor) for a self-attention over `n` tokens, or None to leave the layer alone."""
        if not self.active or latent_hw is None:
            return None
        key = (n, latent_hw[0], latent_hw[1])
        if key not in self._targets:
            self._targets[key] = self._decide(n, latent_hw)
        found = self._targets[key]
        if found is None:
            return None
        h, w, factor, level = found
        self.applied[level] = factor
        return h, w, factor

    def _decide(self, n: int, latent_hw: tuple[int, int]) -> tuple[int, int, float, int] | None:
        match = grid_for_tokens(n, latent_hw, self.layout.level_ds)
        if match is None:
            return None
        ds, h, w = match
        level = self.layout.level_ds.index(ds) + 1
        factor = resolve_factors(self.settings, latent_hw, self.layout)[level - 1]
        if factor <= 1.0 or downsampled_grid(h, w, factor) == (h, w):
            return None
        return h, w, factor, level
