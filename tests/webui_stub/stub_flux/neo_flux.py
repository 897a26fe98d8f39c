"""Stand-in for Forge Neo's backend/nn/flux.py (ported from ComfyUI), small and in our words.

Differences from Forge main that ToDo must honour: `attention(q, k, v, pe, mask=None, transformer_options=None)`
skips RoPE when `pe` is None and passes `mask` and `transformer_options` on to `attention_function`; the model
writes `block_type` ("double"/"single") and `block_index` into `transformer_options` before each block; a
double block whose `flipped_img_txt` is set concatenates the image first (the stand-in turns its RoPE table
to the same order); Kontext reference latents (`ref_latents`) are patchified and appended after the image
tokens, so the joint sequence is longer than text + grid; `patch_size` is an attribute of the model.
"""

from __future__ import annotations

import torch
from torch import nn

from . import forge_flux
from .attention import attention_function
from .parts import grid_positions, heads_of, patchify, rotate, rotation_table, unpatchify


def attention(q, k, v, pe, mask=None, transformer_options=None):  # Neo's default is {}
    """Neo's joint attention: RoPE unless `pe` is None, then the backend with mask and options."""
    if pe is not None:
        q, k = rotate(q, pe), rotate(k, pe)
    heads = q.shape[1]
    return attention_function(q, k, v, heads, skip_reshape=True, mask=mask, transformer_options=transformer_options)


class DoubleStreamBlock(forge_flux.DoubleStreamBlock):
    def __init__(self, hidden: int, heads: int, flipped_img_txt: bool = False) -> None:
        super().__init__(hidden, heads)
        self.flipped_img_txt = flipped_img_txt

    def forward(self, img, txt, vec, pe, attn_mask=None, transformer_options=None):
        img_q, img_k, img_v = heads_of(self.img_qkv(self.img_mod(img, vec)), self.num_heads)
        txt_q, txt_k, txt_v = heads_of(self.txt_qkv(self.txt_mod(txt, vec)), self.num_heads)
        n_txt, n_img = txt.shape[1], img.shape[1]
        if self.flipped_img_txt:
            pe = torch.cat((pe[:, :, n_txt:], pe[:, :, :n_txt]), dim=2)
            q, k, v = (torch.cat(pair, dim=2) for pair in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
            attn = attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
            img_attn, txt_attn = attn[:, :n_img], attn[:, n_img:]
        else:
            q, k, v = (torch.cat(pair, dim=2) for pair in ((txt_q, img_q), (txt_k, img_k), (txt_v, img_v)))
            attn = attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
            txt_attn, img_attn = attn[:, :n_txt], attn[:, n_txt:]
        img = img + self.img_proj(img_attn)
        txt = txt + self.txt_proj(txt_attn)
        return img + self.img_mlp(img), txt + self.txt_mlp(txt)


class SingleStreamBlock(forge_flux.SingleStreamBlock):
    def forward(self, x, vec, pe, attn_mask=None, transformer_options=None):
        q, k, v = heads_of(self.qkv(self.mod(x, vec)), self.num_heads)
        x = x + self.proj(attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options))
        return x + self.mlp(x)


class IntegratedFluxTransformer2DModel(forge_flux.IntegratedFluxTransformer2DModel):
    """As Forge main's stand-in, with Neo's blocks; `flipped` lists the double blocks that put the image first."""

    def __init__(self, flipped: tuple[bool, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        hidden, heads = self.final.in_features, self.double_blocks[0].num_heads
        flips = list(flipped) + [False] * (len(self.double_blocks) - len(flipped))
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(hidden, heads, f) for f in flips)
        self.single_blocks = nn.ModuleList(SingleStreamBlock(hidden, heads) for _ in self.single_blocks)
        self.patch_size = 2

    def forward_orig(self, img, img_ids, txt, txt_ids, timesteps, y, transformer_options, attn_mask=None):
        img, txt, vec = self.embed(img, txt, timesteps, y)
        pe = rotation_table(torch.cat((txt_ids, img_ids), dim=1))
        transformer_options["block_type"] = "double"
        for i, block in enumerate(self.double_blocks):
            transformer_options["block_index"] = i
            img, txt = block(img, txt, vec, pe, attn_mask=attn_mask, transformer_options=transformer_options)
        joined = torch.cat((txt, img), dim=1)
        transformer_options["block_type"] = "single"
        for i, block in enumerate(self.single_blocks):
            transformer_options["block_index"] = i
            joined = block(joined, vec, pe, attn_mask=attn_mask, transformer_options=transformer_options)
        return self.final(joined[:, txt.shape[1] :])

    def forward(
        self,
        x,
        timestep,
        context,
        y=None,
        guidance=None,
        ref_latents=None,
        control=None,
        transformer_options=None,
        **kwargs,
    ):
        transformer_options = {} if transformer_options is None else transformer_options
        b, _, height, width = x.shape
        img, grid = patchify(x)
        img_ids = grid_positions(b, grid)
        for ref in ref_latents or []:  # Kontext: reference tokens after the image, at index 1
            ref_tokens, ref_grid = patchify(ref.to(x))
            img = torch.cat((img, ref_tokens.expand(b, -1, -1)), dim=1)
            img_ids = torch.cat((img_ids, grid_positions(b, ref_grid, index=1.0)), dim=1)
        txt_ids = torch.zeros(b, context.shape[1], 3)
        mask = kwargs.get("attention_mask")
        out = self.forward_orig(img, img_ids, context, txt_ids, timestep, y, transformer_options, attn_mask=mask)
        return unpatchify(out[:, : grid[0] * grid[1]], grid, (height, width))
