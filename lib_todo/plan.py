"""The immutable plan of one installation: which self-attention call gets which factor.

Every backend asks the same question per attention call: "n tokens at latent H x W: which grid, which
factor?" The answer depends only on the settings and the model's layout, so it is cached per size.
"""

from __future__ import annotations

from typing import NamedTuple

from .auto import resolve_factors
from .grid import downsampled_grid, grid_for_tokens
from .layout import AttentionLayout
from .settings import TodoSettings


class Target(NamedTuple):
    """Where to downsample: the `h x w` grid of the tokens, the factor, and the level (1 or 2)."""

    h: int
    w: int
    factor: float
    level: int


class TodoPlan:
    """Settings and layout, and the per-call decision drawn from them (pure: no live state)."""

    def __init__(self, settings: TodoSettings, layout: AttentionLayout) -> None:
        self.settings = settings
        self.layout = layout
        self._targets: dict[tuple[int, int, int], Target | None] = {}
        self._on_grid: dict[tuple[int, int, int], bool] = {}

    def target(self, n: int, latent_hw: tuple[int, int]) -> Target | None:
        """The target for self-attention over `n` tokens at latent `H x W`, or None to leave it alone."""
        key = (n, latent_hw[0], latent_hw[1])
        if key not in self._targets:
            self._targets[key] = self._decide(n, latent_hw)
        return self._targets[key]

    def on_grid(self, n: int, latent_hw: tuple[int, int]) -> bool:
        """Whether `n` tokens are one of the model's attention levels at latent `H x W` (downsampled or not)."""
        key = (n, latent_hw[0], latent_hw[1])
        if key not in self._on_grid:
            self._on_grid[key] = grid_for_tokens(n, latent_hw, self.layout.attention_ds) is not None
        return self._on_grid[key]

    def acts_at(self, latent_hw: tuple[int, int]) -> bool:
        """Whether some level of this model is downsampled at latent `H x W` (auto may mean 1 everywhere)."""
        factors = resolve_factors(self.settings, latent_hw, self.layout)
        return any(f > 1.0 for f, _ in zip(factors, self.layout.level_ds, strict=False))

    def _decide(self, n: int, latent_hw: tuple[int, int]) -> Target | None:
        match = grid_for_tokens(n, latent_hw, self.layout.level_ds)
        if match is None:
            return None
        ds, h, w = match
        level = self.layout.level_ds.index(ds) + 1
        factor = resolve_factors(self.settings, latent_hw, self.layout)[level - 1]
        if factor <= 1.0 or downsampled_grid(h, w, factor) == (h, w):
            return None
        return Target(h, w, factor, level)
