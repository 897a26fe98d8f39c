"""Stand-in for Forge Neo's backend/nn/anima.py (`Anima`, a Cosmos-Predict2 DiT), small and in our words.

What ToDo relies on:
- the latent is (B, C, T, H, W); reference latents (Neo's global `dynamic_args.ref_latents`: `ref_latents` here)
  are concatenated along T after it inside the model, then the whole is padded up to the patch
  (`patch_temporal`, `patch_spatial`, `patch_spatial`) and cut into tokens, row-major (frame, row, column);
- each `Block` runs `self_attn` (a `SelfCrossAttention` with `is_SelfAttn`) over all those tokens with
  split-half RoPE on (frame, row, column), then `cross_attn` (the same class) to the text, without RoPE;
- both call the module-level `attention_function(q, k, v, heads, skip_reshape=True, transformer_options=...)`
  with (B, heads, L, D) from the static `torch_attention_op`, which takes (B, L, heads, D);
- the output is the target's frames only, cropped back to the latent's size.
Left out: the padding-mask channel, adaLN-LoRA, the LLM adapter (it runs in the text encoder's stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neo_parts import angles, attention_function, grid_positions, rms, rotate_split_half, timestep_features

ref_latents: list[torch.Tensor] = []  # Neo's dynamic_args.ref_latents: read by the model itself


class SelfCrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int | None, heads: int) -> None:
        super().__init__()
        self.is_SelfAttn = context_dim is None
        self.n_heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(context_dim or dim, dim, bias=False)
        self.v_proj = nn.Linear(context_dim or dim, dim, bias=False)
        self.output_proj = nn.Linear(dim, dim, bias=False)

    @staticmethod
    def torch_attention_op(q, k, v, transformer_options=None):
        """(B, L, heads, D) each -> Neo's kernel on (B, heads, L, D) -> (B, L, heads*D)."""
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return attention_function(q, k, v, q.shape[1], skip_reshape=True, transformer_options=transformer_options)

    def forward(self, x, context=None, rope=None, transformer_options=None):
        source = x if context is None else context
        q = rms(self.q_proj(x).unflatten(-1, (self.n_heads, -1)))
        k = rms(self.k_proj(source).unflatten(-1, (self.n_heads, -1)))
        v = self.v_proj(source).unflatten(-1, (self.n_heads, -1))
        if self.is_SelfAttn and rope is not None:
            q, k = rotate_split_half(q, rope), rotate_split_half(k, rope)
        return self.output_proj(self.torch_attention_op(q, k, v, transformer_options))


class Block(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = SelfCrossAttention(dim, None, heads)
        self.cross_attn = SelfCrossAttention(dim, context_dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim, bias=False), nn.GELU(), nn.Linear(2 * dim, dim, bias=False))
        self.modulation = nn.Linear(dim, 9 * dim, bias=False)

    def forward(self, x, temb, context, rope, transformer_options=None):
        """x (B, T, H, W, D): attention runs on the tokens flattened row-major."""
        t, h, w = x.shape[1:4]
        mods = self.modulation(temb)[:, None].chunk(9, dim=-1)
        tokens = x.flatten(1, 3)

        def norm(y, i):
            return F.layer_norm(y, y.shape[-1:]) * (1 + mods[i]) + mods[i + 1]

        tokens = tokens + mods[2] * self.self_attn(norm(tokens, 0), None, rope, transformer_options)
        tokens = tokens + mods[5] * self.cross_attn(norm(tokens, 3), context, rope, transformer_options)
        tokens = tokens + mods[8] * self.mlp(norm(tokens, 6))
        return tokens.unflatten(1, (t, h, w))


class Anima(nn.Module):
    def __init__(
        self, in_channels=4, out_channels=4, patch_spatial=2, patch_temporal=1, model_channels=32,
        crossattn_emb_channels=12, num_blocks=2, num_heads=2,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_spatial, self.patch_temporal = patch_spatial, patch_temporal
        self.model_channels, self.num_heads = model_channels, num_heads
        patch_volume = patch_temporal * patch_spatial**2
        self.x_embedder = nn.Linear(in_channels * patch_volume, model_channels, bias=False)
        self.t_embedder = nn.Linear(model_channels, model_channels, bias=False)
        self.blocks = nn.ModuleList(
            [Block(model_channels, crossattn_emb_channels, num_heads) for _ in range(num_blocks)]
        )
        self.final_layer = nn.Linear(model_channels, out_channels * patch_volume, bias=False)

    def forward(self, x, timesteps, context, **kwargs):
        b, _, t0, h0, w0 = x.shape
        for ref in ref_latents:
            x = torch.cat([x, ref.to(x).expand(b, -1, -1, -1, -1)], dim=2)
        pt, ps = self.patch_temporal, self.patch_spatial
        pad = [0, -w0 % ps, 0, -h0 % ps, 0, -x.shape[2] % pt]
        x = F.pad(x, pad, mode="replicate")
        t, h, w = x.shape[2] // pt, x.shape[3] // ps, x.shape[4] // ps
        tokens = x.reshape(b, -1, t, pt, h, ps, w, ps).permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4)
        hidden = self.x_embedder(tokens)  # (B, T, H, W, D)
        half = self.model_channels // self.num_heads // 2
        spatial = half // 3
        rope = angles(grid_positions(t, h, w), [half - 2 * spatial, spatial, spatial], 100.0)[:, None, :]
        temb = self.t_embedder(timestep_features(timesteps, self.model_channels))
        for block in self.blocks:
            hidden = block(hidden, temb, context, rope, kwargs.get("transformer_options"))
        out = self.final_layer(hidden).unflatten(-1, (self.out_channels, pt, ps, ps))
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, self.out_channels, t * pt, h * ps, w * ps)
        return out[:, :, :t0, :h0, :w0]
