"""Stand-in for Neo's Nunchaku Z-Image (backend/nn/svdq.py `patch_nunchaku_zimage`), small and in our words.

Neo swaps every block's `attention` for a subclass of lumina's `JointAttention` defined in svdq.py (a fused
quantised QKV + norm + RoPE kernel there), whose forward calls svdq.py's OWN global `attention_function` (Neo's
PyTorch or xformers kernel imported under that name) with the same (B, heads, L, D) arguments. Here the fused
kernel is the plain projection; what matters is the other module's globals.
"""

from __future__ import annotations

from torch import nn

from .lumina import JointAttention
from .lumina import attention_function as _neo_kernel

attention_function = _neo_kernel  # this module's own name for the kernel, as svdq.py has one


class FusedAttention(JointAttention):
    def __init__(self, original: JointAttention) -> None:
        nn.Module.__init__(self)
        self.heads, self.kv_heads, self.head_dim = original.heads, original.kv_heads, original.head_dim
        self.qkv, self.out = original.qkv, original.out

    def forward(self, x, mask, angles, transformer_options=None):
        q, k, v = self.project(x, angles)
        out = attention_function(q, k, v, self.heads, mask, skip_reshape=True, transformer_options=transformer_options)
        return self.out(out)


def fuse(network: nn.Module) -> nn.Module:
    """Every block's attention replaced by the fused one (the weights shared), as Neo's loader does."""
    for blocks in (network.layers, network.noise_refiner, network.context_refiner):
        for block in blocks:
            block.attention = FusedAttention(block.attention)
    return network
