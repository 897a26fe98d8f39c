"""Stand-in for Forge Neo's backend/nn/ernie.py (`ErnieImageModel`), small and in our words.

What ToDo relies on:
- the latent is (B, C, H, W) (the Flux.2 VAE's, no time axis), cut into `patch_size` squares by a strided conv
  (no padding), one token per square, row-major;
- every layer's `self_attention` attends over [image, text] (IMAGE FIRST; the text is `context`, projected),
  q/k RMS-normalised, split-half RoPE on ids (first axis: the text length for the image, the index for the text;
  then row, column), then calls the module-level `attention_function(q, k, v, heads, mask=attention_mask)` with
  (B, L, heads*D); the model passes no mask;
- the output is the image tokens, unpatchified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neo_parts import angles, attention_function, grid_positions, rms, rotate_split_half, timestep_features


class ErnieImageAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False)])

    def forward(self, x, attention_mask=None, image_rotary_emb=None):
        b, s, _ = x.shape
        q = rms(self.to_q(x).view(b, s, self.heads, -1))
        k = rms(self.to_k(x).view(b, s, self.heads, -1))
        if image_rotary_emb is not None:
            q, k = rotate_split_half(q, image_rotary_emb), rotate_split_half(k, image_rotary_emb)
        out = attention_function(
            q.reshape(b, s, -1), k.reshape(b, s, -1), self.to_v(x), self.heads, mask=attention_mask
        )
        return self.to_out[0](out)


class ErnieImageSharedAdaLNBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.adaLN_sa_ln = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attention = ErnieImageAttention(dim, heads)
        self.adaLN_mlp_ln = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim, bias=False), nn.GELU(), nn.Linear(2 * dim, dim, bias=False))

    def forward(self, x, rope, temb, attention_mask=None):
        shift, scale, gate, shift2, scale2, gate2 = temb
        x = x + gate * self.self_attention(self.adaLN_sa_ln(x) * (1 + scale) + shift, attention_mask, rope)
        return x + gate2 * self.mlp(self.adaLN_mlp_ln(x) * (1 + scale2) + shift2)


class ErnieImageModel(nn.Module):
    def __init__(
        self, hidden_size=32, num_attention_heads=2, num_layers=2, in_channels=8, out_channels=8, patch_size=1,
        text_in_dim=24,
    ) -> None:  # fmt: skip
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_attention_heads
        self.patch_size, self.out_channels = patch_size, out_channels
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.text_proj = nn.Linear(text_in_dim, hidden_size, bias=False)
        self.time_embedding = nn.Linear(hidden_size, hidden_size)
        self.adaLN_modulation = nn.Linear(hidden_size, 6 * hidden_size)
        self.layers = nn.ModuleList(
            [ErnieImageSharedAdaLNBlock(hidden_size, num_attention_heads) for _ in range(num_layers)]
        )
        self.final_linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x, timesteps, context, **kwargs):
        b, _, height, width = x.shape
        p = self.patch_size
        h, w = height // p, width // p
        image = self.x_embedder(x).flatten(2).transpose(1, 2)
        text = self.text_proj(context)
        n_txt = text.shape[1]
        hidden = torch.cat([image, text], dim=1)
        image_ids = grid_positions(1, h, w, frame0=float(n_txt))
        text_ids = torch.zeros(n_txt, 3)
        text_ids[:, 0] = torch.arange(n_txt)
        half = self.hidden_size // self.num_heads // 2
        sizes = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
        rope = angles(torch.cat([image_ids, text_ids]), sizes, 256.0)[:, None, :]
        c = self.time_embedding(timestep_features(timesteps, self.hidden_size))
        temb = [m[:, None] for m in self.adaLN_modulation(F.silu(c)).chunk(6, dim=-1)]
        for layer in self.layers:
            hidden = layer(hidden, rope, temb)
        patches = self.final_linear(hidden[:, : h * w])
        out = patches.view(b, h, w, self.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, self.out_channels, height, width)
