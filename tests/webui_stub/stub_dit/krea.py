"""Stand-in for Forge Neo's backend/nn/krea.py (`SingleStreamDiT`, Krea 2), small and in our words.

What ToDo relies on:
- the latent is (B, C, T, H, W) (Neo's Krea engine sets `is_wan`; T folds into the batch) or (B, C, H, W),
  padded up to `patch`, one token per patch, row-major;
- the text `context` is (B, S, layers * dim) (or (B, 1, S, ...)): the text-fusion transformer (`txtfusion`)
  attends per token across the layers, collapses them, then attends over the S tokens: text only;
- every main block's `attn` attends over [text, image (, references)] (TEXT FIRST), pairwise RoPE on
  (index, row, column) ids, grouped-query k/v heads repeated before the call, then the module-level
  `attention_function(q, k, v, heads, mask=mask, skip_reshape=True, transformer_options=...)` with
  (B, heads, L, D); the text-fusion blocks use the same `Attention` class;
- with `ref_latents` among the keyword arguments, their tokens (ids (i + 1, row, column)) follow the target's and
  the model calls each block's `attn` itself (`_with_references`: another modulation for the reference span), not
  the block's forward;
- the output is the target's tokens, unpatchified and cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .neo_parts import angles, attention_function, grid_positions, rms, rotate_pairs, timestep_features


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kvheads: int) -> None:
        super().__init__()
        self.heads, self.kvheads = heads, kvheads
        head_dim = dim // heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, head_dim * kvheads, bias=False)
        self.wv = nn.Linear(dim, head_dim * kvheads, bias=False)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, freqs=None, mask=None, transformer_options=None):
        q = rms(self.wq(x).unflatten(-1, (self.heads, -1)).transpose(1, 2))
        k = rms(self.wk(x).unflatten(-1, (self.kvheads, -1)).transpose(1, 2))
        v = self.wv(x).unflatten(-1, (self.kvheads, -1)).transpose(1, 2)
        if freqs is not None:
            q, k = rotate_pairs(q, freqs), rotate_pairs(k, freqs)
        k, v = (t.repeat_interleave(self.heads // self.kvheads, dim=1) for t in (k, v))
        out = attention_function(
            q, k, v, self.heads, mask=mask, skip_reshape=True, transformer_options=transformer_options
        )
        return self.wo(out * torch.sigmoid(self.gate(x)))


class TextFusionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, kvheads: int) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, kvheads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim, bias=False), nn.SiLU(), nn.Linear(2 * dim, dim, bias=False))

    def forward(self, x, mask=None, transformer_options=None):
        x = x + self.attn(rms(x), mask=mask, transformer_options=transformer_options)
        return x + self.mlp(rms(x))


class TextFusionTransformer(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, kvheads: int) -> None:
        super().__init__()
        self.layerwise_blocks = nn.ModuleList([TextFusionBlock(dim, heads, kvheads)])
        self.projector = nn.Linear(layers, 1, bias=False)
        self.refiner_blocks = nn.ModuleList([TextFusionBlock(dim, heads, kvheads)])

    def forward(self, x, mask=None, transformer_options=None):
        b, s, layers, d = x.shape
        x = x.reshape(b * s, layers, d)
        for block in self.layerwise_blocks:  # attention across the layers of one token
            x = block(x, transformer_options=transformer_options)
        x = self.projector(x.reshape(b, s, layers, d).transpose(2, 3)).squeeze(-1)
        for block in self.refiner_blocks:  # attention over the text tokens
            x = block(x, mask=mask, transformer_options=transformer_options)
        return x


class SingleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, kvheads: int) -> None:
        super().__init__()
        self.mod = nn.Parameter(torch.zeros(6 * dim))
        self.attn = Attention(dim, heads, kvheads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim, bias=False), nn.SiLU(), nn.Linear(2 * dim, dim, bias=False))

    def modulation(self, vec):
        return (vec + self.mod).chunk(6, dim=-1)

    def forward(self, x, vec, freqs, mask=None, transformer_options=None):
        scale, shift, gate, scale2, shift2, gate2 = self.modulation(vec)
        x = x + gate * self.attn((1 + scale) * rms(x) + shift, freqs, mask, transformer_options=transformer_options)
        return x + gate2 * self.mlp((1 + scale2) * rms(x) + shift2)


def _with_references(block, x, vec, refvec, split, freqs, transformer_options):
    """A block over [text, image | references]: the references' span modulated by `refvec`; `attn` called here."""
    m, r = block.modulation(vec), block.modulation(refvec)

    def mod(h, i):
        return torch.cat([(1 + m[i]) * h[:, :split] + m[i + 1], (1 + r[i]) * h[:, split:] + r[i + 1]], dim=1)

    def gate(h, i):
        return torch.cat([m[i] * h[:, :split], r[i] * h[:, split:]], dim=1)

    x = x + gate(block.attn(mod(rms(x), 0), freqs, None, transformer_options=transformer_options), 2)
    return x + gate(block.mlp(mod(rms(x), 3)), 5)


class SingleStreamDiT(nn.Module):
    def __init__(
        self, features=32, heads=4, kvheads=2, layers=2, patch=2, channels=4, txtdim=12, txtlayers=3, txtheads=2,
        txtkvheads=1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.patch, self.channels, self.features, self.heads = patch, channels, features, heads
        self.txtlayers, self.txtdim = txtlayers, txtdim
        self.first = nn.Linear(channels * patch * patch, features)
        self.tmlp = nn.Linear(features, features)
        self.tproj = nn.Linear(features, 6 * features)
        self.txtfusion = TextFusionTransformer(txtlayers, txtdim, txtheads, txtkvheads)
        self.txtmlp = nn.Linear(txtdim, features)
        self.blocks = nn.ModuleList([SingleStreamBlock(features, heads, kvheads) for _ in range(layers)])
        self.last = nn.Linear(features, patch * patch * channels)

    def _tokens(self, x):
        p = self.patch
        x = F.pad(x, [0, -x.shape[-1] % p, 0, -x.shape[-2] % p], mode="replicate")
        h, w = x.shape[-2] // p, x.shape[-1] // p
        return x.reshape(x.shape[0], -1, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], h * w, -1), h, w

    def forward(self, x, timesteps, context, attention_mask=None, transformer_options=None, **kwargs):
        refs = kwargs.get("ref_latents") or []
        frames = x.shape[2] if x.dim() == 5 else None
        if frames is not None:
            x = x.movedim(2, 1).flatten(0, 1)
        bs, _, height, width = x.shape
        image, h, w = self._tokens(x)
        context = context.squeeze(1)
        text = self.txtfusion(
            context.reshape(*context.shape[:2], self.txtlayers, self.txtdim), None, transformer_options
        )
        text = self.txtmlp(text)
        positions = [torch.zeros(text.shape[1], 3), grid_positions(1, h, w)]
        ref_tokens = []
        for i, ref in enumerate(refs):
            ref = ref.movedim(2, 1).flatten(0, 1) if ref.dim() == 5 else ref
            tokens, rh, rw = self._tokens(ref.to(x).expand(bs, -1, -1, -1))
            ref_tokens.append(tokens)
            positions.append(grid_positions(1, rh, rw, frame0=i + 1.0))
        hidden = torch.cat([text, self.first(torch.cat([image, *ref_tokens], dim=1))], dim=1)
        head_half = self.features // self.heads // 2
        freqs = angles(torch.cat(positions), [head_half - 2 * (head_half // 3), head_half // 3, head_half // 3], 1e3)
        vec = self.tproj(F.gelu(self.tmlp(timestep_features(timesteps, self.features))))[:, None]
        split = text.shape[1] + h * w
        if refs:
            refvec = self.tproj(F.gelu(self.tmlp(timestep_features(torch.zeros_like(timesteps), self.features))))
            for block in self.blocks:
                hidden = _with_references(block, hidden, vec, refvec[:, None], split, freqs, transformer_options)
        else:
            for block in self.blocks:
                hidden = block(hidden, vec, freqs, None, transformer_options=transformer_options)
        out = self.last(hidden[:, text.shape[1] : split]).view(bs, h, w, self.channels, self.patch, self.patch)
        out = out.permute(0, 3, 1, 4, 2, 5).reshape(bs, self.channels, h * self.patch, w * self.patch)
        out = out[:, :, :height, :width]
        return out if frames is None else out.unflatten(0, (-1, frames)).movedim(1, 2)
