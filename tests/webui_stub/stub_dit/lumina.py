"""Stand-in for Forge Neo's backend/nn/lumina.py (`NextDiT`: Lumina 2, Neta, Z-Image), small and in our words.

What ToDo relies on, as Neo does it:
- The model is called as `network(x, timesteps, context=c_crossattn, transformer_options=..., **conds)`, x a
  (B, C, H, W) latent padded up to the 2x2 patch; tokens row-major.
- With `pad_tokens_multiple` set (Z-Image: 32), the caption is padded up to a multiple with a learned token
  (`cap_pad_token`) and the image tokens likewise (`x_pad_token`); without it (Lumina 2) nothing is padded.
- `context_refiner` blocks (no modulation) see the caption alone, with the caption mask; `noise_refiner` blocks see
  [image, image pads] with no mask; the main `layers` see [caption + pads, image, image pads] with no mask.
- Every block's `attention` module projects q/k/v (fewer key/value heads: GQA), turns q and k by RoPE, repeats the
  key/value heads, and calls its module's global `attention_function(q, k, v, heads, mask, skip_reshape=True,
  transformer_options=...)` with (B, heads, L, D); the kernel answers (B, L, heads*D).
- Z-Image's blocks modulate through a bare Linear (`z_image_modulation`), Lumina 2's through SiLU then Linear.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import neo_parts
from .neo_parts import call_patcher, neo_patcher  # noqa: F401 - the tests reach them from here

AXES = (4, 6, 6)  # RoPE channels per axis (sequence index, row, column): head dim 16


def attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, **kwargs):
    """Neo's kernel (neo_parts, the hosts' one stand-in), as this stand-in's blocks call it: (B, heads, L, D) with
    skip_reshape, else (B, L, heads*D); answers (B, L, heads*D). A 2-D mask (B, L) marks the keys to attend."""
    if mask is not None and mask.dim() == 2:
        mask = mask.bool()[:, None, None, :]
    return neo_parts.attention_function(q, k, v, heads, mask, attn_precision, skip_reshape, **kwargs)


def rope_angles(positions: torch.Tensor) -> torch.Tensor:
    """(B, L, 3) integer positions -> (B, L, 8) angles, one per channel pair, slower for later pairs."""
    parts = []
    for axis, dim in enumerate(AXES):
        speed = 100.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        parts.append(positions[..., axis, None].double() * speed)
    return torch.cat(parts, dim=-1).float()


def turn(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x (B, L, heads, D): channel pairs (2i, 2i+1) turned by angles (B, L, D/2)."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos()[:, :, None], angles.sin()[:, :, None]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def project(self, x: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, heads, L, D) q, k, v: RoPE'd, the key/value heads repeated to the query heads."""
        sizes = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
        q, k, v = (t.unflatten(-1, (-1, self.head_dim)) for t in self.qkv(x).split(sizes, dim=-1))
        q, k = turn(q, angles), turn(k, angles)
        repeat = self.heads // self.kv_heads
        k, v = (t.repeat_interleave(repeat, dim=2) for t in (k, v))
        return tuple(t.transpose(1, 2) for t in (q, k, v))

    def forward(self, x, mask, angles, transformer_options=None):
        q, k, v = self.project(x, angles)
        out = attention_function(q, k, v, self.heads, mask, skip_reshape=True, transformer_options=transformer_options)
        return self.out(out)


class Block(nn.Module):
    """Norm, attention, norm, MLP; modulated by the timestep unless it refines the caption."""

    def __init__(self, dim: int, heads: int, kv_heads: int, modulated: bool, z_image_modulation: bool) -> None:
        super().__init__()
        self.attention = JointAttention(dim, heads, kv_heads)
        self.norm = nn.RMSNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        if modulated:
            first = [] if z_image_modulation else [nn.SiLU()]
            self.adaLN_modulation = nn.Sequential(*first, nn.Linear(dim, 2 * dim))
        self.modulated = modulated

    def forward(self, x, mask, angles, cond=None, transformer_options=None):
        scale, gate = self.adaLN_modulation(cond)[:, None].chunk(2, -1) if self.modulated else (0.0, 1.0)
        x = x + torch.tanh(torch.as_tensor(gate)) * self.attention(
            self.norm(x) * (1 + scale), mask, angles, transformer_options
        )
        return x + self.mlp(self.norm(x))


class NextDiT(nn.Module):
    def __init__(
        self,
        dim: int = 32,
        heads: int = 2,
        kv_heads: int = 1,
        n_layers: int = 2,
        n_refiner_layers: int = 1,
        in_channels: int = 4,
        cap_feat_dim: int = 24,
        pad_tokens_multiple: int | None = None,
        z_image_modulation: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = 2
        self.pad_tokens_multiple = pad_tokens_multiple
        self.x_embedder = nn.Linear(4 * in_channels, dim)
        self.cap_embedder = nn.Sequential(nn.RMSNorm(cap_feat_dim), nn.Linear(cap_feat_dim, dim))
        self.t_embedder = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))

        def blocks(n: int, modulated: bool) -> nn.ModuleList:
            return nn.ModuleList(Block(dim, heads, kv_heads, modulated, z_image_modulation) for _ in range(n))

        self.noise_refiner = blocks(n_refiner_layers, True)
        self.context_refiner = blocks(n_refiner_layers, False)
        self.layers = blocks(n_layers, True)
        self.final = nn.Linear(dim, 4 * in_channels)
        if pad_tokens_multiple is not None:
            self.x_pad_token = nn.Parameter(torch.empty(1, dim))
            self.cap_pad_token = nn.Parameter(torch.empty(1, dim))

    def pad(self, tokens: torch.Tensor, pad_token: Any) -> torch.Tensor:
        """(B, L, dim) followed by learned pad tokens up to a multiple (no padding without a multiple)."""
        if not self.pad_tokens_multiple:
            return tokens
        extra = (-tokens.shape[1]) % self.pad_tokens_multiple
        return torch.cat([tokens, pad_token.to(tokens)[None].expand(tokens.shape[0], extra, -1)], dim=1)

    def forward(self, x, timesteps, context, attention_mask=None, transformer_options=None, **kwargs):
        options = transformer_options or {}
        b, c, height, width = x.shape
        x = F.pad(x, (0, (-width) % 2, 0, (-height) % 2))
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        cond = self.t_embedder(timesteps.float()[:, None])
        caption = self.pad(self.cap_embedder(context), getattr(self, "cap_pad_token", None))
        patches = x.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, 4 * c)
        image = self.pad(self.x_embedder(patches), getattr(self, "x_pad_token", None))
        n_cap, n_img = caption.shape[1], h * w

        positions = torch.zeros(b, n_cap + image.shape[1], 3)
        positions[:, :n_cap, 0] = torch.arange(n_cap) + 1.0
        positions[:, n_cap : n_cap + n_img, 0] = n_cap + 1.0
        positions[:, n_cap : n_cap + n_img, 1] = torch.arange(h).repeat_interleave(w).float()
        positions[:, n_cap : n_cap + n_img, 2] = torch.arange(w).repeat(h).float()  # image pads stay at 0, 0, 0
        angles = rope_angles(positions)

        for block in self.context_refiner:
            caption = block(caption, attention_mask, angles[:, :n_cap], transformer_options=options)
        for block in self.noise_refiner:
            image = block(image, None, angles[:, n_cap:], cond, transformer_options=options)
        joint = torch.cat([caption, image], dim=1)
        for block in self.layers:
            joint = block(joint, None, angles, cond, transformer_options=options)

        out = self.final(joint[:, n_cap : n_cap + n_img])
        out = out.reshape(b, h, w, 2, 2, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, 2 * h, 2 * w)
        return -out[:, :, :height, :width]
