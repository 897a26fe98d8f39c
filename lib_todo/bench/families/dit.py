"""What the DiT families of the bench share: their configurations, their kept share, smooth inputs.

A DiT block attends over one joint sequence: text (or caption) tokens and the image tokens of a `h x w` patch
grid (per frame for video). Its configurations (`dit_configs`): `bound`, the image keys costing nothing (every
query attends to the text keys only; every projection and MLP still runs: no reduction of the image keys can beat
it); `auto`; `f{F}`, ToDo at factor F with balance (the bias in an extra head channel, through the model's own
kernel: what users run); `f{F}-mask`, the bias in an SDPA float mask instead (a mask keeps SDPA off its flash
kernel on a GPU); `f{F}-nb`, without balance. The ideal time of a ToDo
row keeps M of the N image keys: `base - (1 - M/N) * (base - bound)` (`kept_share`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...grid import downsampled_grid
from ..family import Applied, Config, todo_configs

KINDS = ("bound", "auto", "f", "f-mask", "f-nb")
BALANCE_ROWS = {"f-mask": ("-mask", "mask"), "f-nb": ("-nb", "off")}  # kind: (name suffix, balance)


def dit_configs(factors: Sequence[float], kinds: set[str]) -> list[Config]:
    """bound, auto, f{F} (the bias in a head channel, through the model's kernel), then f{F}-mask (the bias in an
    SDPA mask) and f{F}-nb (balance off) per factor: those of `kinds`, in table order."""
    out = todo_configs(factors, kinds)
    balanced = todo_configs(factors, {"f"})
    for kind, (suffix, balance) in BALANCE_ROWS.items():
        if kind in kinds:
            out.extend(Config(c.name + suffix, "todo", c.settings, has_ideal=True, balance=balance) for c in balanced)
    return out


def kept_share(grid: tuple[int, int], factor: float) -> float:
    """M/N: the image keys ToDo keeps at `factor` on an `h x w` grid (cells at the border are smaller), 1 when off."""
    if factor <= 1.0:
        return 1.0
    return math.prod(downsampled_grid(*grid, factor)) / math.prod(grid)


def todo_applied(config: Config, factor: float, calls: int, attns: int, grid: tuple[int, int]) -> Applied:
    """The table's words for a ToDo row of a DiT ("2x balanced (6/6 calls)") and its kept share of image keys."""
    if factor <= 1.0:
        return Applied(f"not downsampled (0/{attns} calls)", 1.0)
    how = {"channel": "balanced (bias channel)", "mask": "balanced (bias mask)"}.get(config.balance, "no balance")
    return Applied(f"{factor:g}x {how} ({calls}/{attns} calls)", kept_share(grid, factor))


def smooth_tokens(h: int, w: int, channels: int, g: torch.Generator, frames: int = 1) -> torch.Tensor:
    """(1, frames*h*w, C) tokens, as latents are far from white noise: a random field on a grid 8x coarser,
    bilinearly upsampled, plus 10% white noise; frames row-major (frame, row, column)."""
    coarse = torch.randn(frames, channels, max(1, h // 8), max(1, w // 8), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    field = field / field.std() + 0.1 * torch.randn(frames, channels, h, w, generator=g)
    return field.flatten(2).transpose(1, 2).reshape(1, frames * h * w, channels).contiguous()


def grid_ids(h: int, w: int) -> torch.Tensor:
    """(h*w, 3) position ids [0, row, col], row-major: Flux's image ids."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)
