"""Pieces both Flux stand-ins share: RoPE tables, 2x2 patchify with circular padding, small layers.

Shapes follow the hosts: RoPE tables are (B, 1, L, D/2, 2, 2) rotation matrices built from (B, L, 3)
positions (text tokens at 0, image token (row, col) at (0, row, col)); q/k/v are (B, heads, L, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

AXES_DIM = (4, 6, 6)  # head dim 16: the RoPE axes (index, row, column), as Flux's (16, 56, 56) in small
THETA = 10_000


def rotation_table(positions: torch.Tensor, axes_dim: tuple[int, ...] = AXES_DIM) -> torch.Tensor:
    """(B, L, n_axes) positions -> (B, 1, L, sum(axes_dim)/2, 2, 2) rotations, one per pair of channels."""
    blocks = []
    for axis, dim in enumerate(axes_dim):
        speeds = THETA ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angle = positions[..., axis, None].double() * speeds
        cos, sin = angle.cos(), angle.sin()
        blocks.append(torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2))
    return torch.cat(blocks, dim=2).unsqueeze(1).float()


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Each pair of channels of x (B, heads, L, D) turned by its rotation in `table`."""
    pairs = x.float().unflatten(-1, (-1, 2)).unsqueeze(-1)
    return (table @ pairs).squeeze(-1).flatten(-2).type_as(x)


def patchify(x: torch.Tensor, patch: int = 2) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) -> (B, h*w, C*patch*patch) tokens on the h x w grid, odd sides padded circularly first."""
    pad_h, pad_w = (-x.shape[-2]) % patch, (-x.shape[-1]) % patch
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    b, c, height, width = x.shape
    h, w = height // patch, width // patch
    tokens = x.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * patch * patch)
    return tokens, (h, w)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], patch: int = 2) -> torch.Tensor:
    """The inverse of patchify, cropped back to the latent size `size`."""
    b, _, features = tokens.shape
    h, w = grid
    c = features // (patch * patch)
    x = tokens.reshape(b, h, w, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * patch, w * patch)
    return x[:, :, : size[0], : size[1]]


def grid_positions(batch: int, grid: tuple[int, int], index: float = 0.0, offset: tuple[int, int] = (0, 0)):
    """(B, h*w, 3) positions of image tokens: (index, row, column), row-major."""
    rows = torch.arange(grid[0], dtype=torch.float32)[:, None].expand(grid) + offset[0]
    cols = torch.arange(grid[1], dtype=torch.float32)[None, :].expand(grid) + offset[1]
    ids = torch.stack([torch.full(grid, float(index)), rows, cols], dim=-1).reshape(1, -1, 3)
    return ids.expand(batch, -1, -1)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the timestep (B,) -> (B, dim)."""
    half = dim // 2
    speeds = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
    angle = 1000.0 * t.float()[:, None] * speeds[None]
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


def heads_of(x: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (B, L, 3*heads*D) projection -> q, k, v of (B, heads, L, D)."""
    b, length, _ = x.shape
    q, k, v = x.reshape(b, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(approximate="tanh"), nn.Linear(2 * hidden, hidden))


class Shift(nn.Module):
    """LayerNorm, then a scale and shift computed from the conditioning vector (Flux's modulation, in small)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.lin = nn.Linear(hidden, 2 * hidden)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        scale, shift = self.lin(F.silu(vec))[:, None].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class Embedders(nn.Module):
    """Inputs to the hidden width: image tokens, text tokens, and the conditioning vector (timestep, pooled)."""

    def __init__(self, in_features: int, context_dim: int, vec_dim: int, hidden: int) -> None:
        super().__init__()
        self.img_in = nn.Linear(in_features, hidden)
        self.txt_in = nn.Linear(context_dim, hidden)
        self.time_in = nn.Linear(32, hidden)
        self.vector_in = nn.Linear(vec_dim, hidden)
        self.vec_dim = vec_dim

    def forward(self, img, txt, t, y):
        if y is None:
            y = torch.zeros(img.shape[0], self.vec_dim, dtype=img.dtype)
        vec = self.time_in(timestep_features(t, 32).to(img.dtype)) + self.vector_in(y)
        return self.img_in(img), self.txt_in(txt), vec
