"""What the bench compares: the configurations besides the baseline, and the patches behind them.

The `bound` swaps level-1 `attn1` for ZeroAttention (the ceiling of any key/value reduction on that level);
`tome` applies tomesd at TOME_RATIO; ToDo configurations carry their TodoSettings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import TodoSettings

TOME_RATIO = 0.5
CONFIG_KINDS = ("bound", "auto", "f", "f+l2", "tome")


class ZeroAttention(nn.Module):
    """Stands in for an `attn1`: its output is zeros and nothing is computed."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(x)


@contextmanager
def level1_free(blocks: list[nn.Module]) -> Iterator[None]:
    """Swap the `attn1` of `blocks` for ZeroAttention; restore after."""
    saved = [b.attn1 for b in blocks]
    try:
        for b in blocks:
            b.attn1 = ZeroAttention()
        yield
    finally:
        for b, attn in zip(blocks, saved, strict=True):
            b.attn1 = attn


@contextmanager
def tome_patch(unet: nn.Module, family: str, max_downsample: int) -> Iterator[None]:
    """tomesd at TOME_RATIO; ldm UNets are wrapped as tomesd wants (`.model.diffusion_model`)."""
    import tomesd

    target: nn.Module = unet
    if family == "ldm":
        target = nn.Module()
        target.model = nn.Module()
        target.model.diffusion_model = unet
    tomesd.apply_patch(target, ratio=TOME_RATIO, max_downsample=max_downsample)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration: `kind` is "baseline", "bound", "todo" or "tome".

    has_ideal: the configuration acts on level 1 only (by its settings), so the bound gives its ideal time.
    """

    name: str
    kind: str
    settings: TodoSettings | None = None
    has_ideal: bool = False


BASELINE = Config("baseline", "baseline")


def make_configs(factors: list[float], kinds: set[str]) -> list[Config]:
    """The configurations besides the baseline, in table order (each model says which it cannot run)."""
    out: list[Config] = []
    if "bound" in kinds:
        out.append(Config("bound", "bound"))
    if "auto" in kinds:
        out.append(Config("auto", "todo", TodoSettings(), has_ideal=True))
    for f in factors:
        if "f" in kinds:
            out.append(Config(f"f{f:g}", "todo", TodoSettings(factor=f, factor_level2=1), has_ideal=True))
    for f in factors:
        if "f+l2" in kinds:
            out.append(Config(f"f{f:g}+l2", "todo", TodoSettings(factor=f, factor_level2=f)))
    if "tome" in kinds:
        out.append(Config("tome", "tome"))
    return out
