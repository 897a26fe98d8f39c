"""Stand-in for Forge main's backend/nn/flux.py (IntegratedFluxTransformer2DModel), small and in our words.

What ToDo relies on, as in Forge: a module-level `attention(q, k, v, pe)` that rotates q and k with the RoPE
table and calls the module-level `attention_function(q, k, v, heads, skip_reshape=True)` imported by name;
double blocks project text and image apart, concatenate text first and split the (B, L, heads*D) output at
the text length; single blocks get the joined sequence and never learn the text length; the model pads the
latent circularly to even sides and patchifies 2x2; `transformer_options` is accepted and ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import attention_function
from .parts import (
    AXES_DIM,
    Embedders,
    Shift,
    grid_positions,
    heads_of,
    mlp,
    patchify,
    rotate,
    rotation_table,
    unpatchify,
)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """Forge's joint attention: RoPE on q and k, then the attention backend; (B, heads, L, D) -> (B, L, C)."""
    q, k = rotate(q, pe), rotate(k, pe)
    return attention_function(q, k, v, q.shape[1], skip_reshape=True)


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.img_mod, self.txt_mod = Shift(hidden), Shift(hidden)
        self.img_qkv, self.txt_qkv = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        self.img_proj, self.txt_proj = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.img_mlp, self.txt_mlp = mlp(hidden), mlp(hidden)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor):
        img_q, img_k, img_v = heads_of(self.img_qkv(self.img_mod(img, vec)), self.num_heads)
        txt_q, txt_k, txt_v = heads_of(self.txt_qkv(self.txt_mod(txt, vec)), self.num_heads)
        q = torch.cat((txt_q, img_q), dim=2)
        k = torch.cat((txt_k, img_k), dim=2)
        v = torch.cat((txt_v, img_v), dim=2)
        attn = attention(q, k, v, pe=pe)
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1] :]
        img = img + self.img_proj(img_attn)
        txt = txt + self.txt_proj(txt_attn)
        return img + self.img_mlp(img), txt + self.txt_mlp(txt)


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.mod = Shift(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = mlp(hidden)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        q, k, v = heads_of(self.qkv(self.mod(x, vec)), self.num_heads)
        x = x + self.proj(attention(q, k, v, pe=pe))
        return x + self.mlp(x)


class IntegratedFluxTransformer2DModel(nn.Module):
    """forward(x (B, C, H, W), timestep (B,), context (B, T, context_dim), y (B, vec_dim) | None, ...)."""

    def __init__(
        self,
        in_channels: int = 16,
        hidden: int = 32,
        heads: int = 2,
        depth: int = 2,
        depth_single: int = 2,
        context_dim: int = 24,
        vec_dim: int = 8,
    ) -> None:
        super().__init__()
        assert hidden // heads == sum(AXES_DIM)
        self.in_channels = in_channels
        self.embed = Embedders(in_channels * 4, context_dim, vec_dim, hidden)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(hidden, heads) for _ in range(depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(hidden, heads) for _ in range(depth_single))
        self.final = nn.Linear(hidden, in_channels * 4)

    def inner_forward(self, img, img_ids, txt, txt_ids, timesteps, y):
        img, txt, vec = self.embed(img, txt, timesteps, y)
        pe = rotation_table(torch.cat((txt_ids, img_ids), dim=1))
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        joined = torch.cat((txt, img), dim=1)
        for block in self.single_blocks:
            joined = block(joined, vec, pe)
        return self.final(joined[:, txt.shape[1] :])

    def forward(self, x, timestep, context, y=None, guidance=None, **kwargs):
        b, _, height, width = x.shape
        img, grid = patchify(x)
        txt_ids = torch.zeros(b, context.shape[1], 3)
        out = self.inner_forward(img, grid_positions(b, grid), context, txt_ids, timestep, y)
        return unpatchify(out, grid, (height, width))
