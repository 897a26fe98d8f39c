"""Stand-in for reForge's Flux (ComfyUI's flux code in ldm_patched), as far as ToDo cares: math.py's
`attention(q, k, v, pe)` rotates q and k and calls `optimized_attention(q, k, v, heads, skip_reshape=True)`,
imported by name from ldm_patched's attention module, and the blocks call that `attention`. Here one module
holds both; the layers are Forge main's stand-in's.
"""

from __future__ import annotations

import torch
from torch import nn

from . import forge_flux
from .attention import attention_function as optimized_attention
from .parts import heads_of, rotate


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    q, k = rotate(q, pe), rotate(k, pe)
    return optimized_attention(q, k, v, q.shape[1], skip_reshape=True)


class DoubleStreamBlock(forge_flux.DoubleStreamBlock):
    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor):
        img_q, img_k, img_v = heads_of(self.img_qkv(self.img_mod(img, vec)), self.num_heads)
        txt_q, txt_k, txt_v = heads_of(self.txt_qkv(self.txt_mod(txt, vec)), self.num_heads)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((txt_q, img_q), (txt_k, img_k), (txt_v, img_v)))
        attn = attention(q, k, v, pe=pe)
        img = img + self.img_proj(attn[:, txt.shape[1] :])
        txt = txt + self.txt_proj(attn[:, : txt.shape[1]])
        return img + self.img_mlp(img), txt + self.txt_mlp(txt)


class SingleStreamBlock(forge_flux.SingleStreamBlock):
    def forward(self, x: torch.Tensor, vec: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        q, k, v = heads_of(self.qkv(self.mod(x, vec)), self.num_heads)
        x = x + self.proj(attention(q, k, v, pe=pe))
        return x + self.mlp(x)


class Flux(forge_flux.IntegratedFluxTransformer2DModel):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        hidden, heads = self.final.in_features, self.double_blocks[0].num_heads
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(hidden, heads) for _ in self.double_blocks)
        self.single_blocks = nn.ModuleList(SingleStreamBlock(hidden, heads) for _ in self.single_blocks)
        self.patch_size = 2
