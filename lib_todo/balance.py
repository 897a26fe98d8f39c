"""The balance bias carried into an attention kernel that takes no bias: one more head channel.

Flash kernels, SageAttention and xformers take no additive mask (and a mask keeps PyTorch SDPA off its flash
path), so ToDo's per-key bias b (log of the cell size; see `joint_attention`) rides in the keys instead. With
the head dim D padded to D' (D + 1 rounded up to a multiple of 8, as kernels want), s the logit scale ToDo
needs (the host's, default 1/sqrt(D)) and s' the scale the kernel will apply:

    q' = [q * s / s', a, 0, ...]    k' = [k, b / (s' * a), 0, ...]    v' = [v, 0, ...]

so that s' * q'.k' = s * q.k + b exactly, and the first D channels of the output are the answer. `a` splits the
bias between q and k so that neither channel is far larger than the others (low-precision kernels quantise per
block). A kernel that is told its scale gets s' = s and q is left as it is; one that always uses
1/sqrt(head dim) gets s' = 1/sqrt(D') and q is rescaled.
"""

from __future__ import annotations

import math

import torch

MULTIPLE = 8


def padded_dim(d: int) -> int:
    """The head dim with room for the bias channel: d + 1 rounded up to a multiple of 8."""
    return -(-(d + 1) // MULTIPLE) * MULTIPLE


def with_bias_channel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    scale: float | None = None,
    kernel_takes_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """q, k, v (B, heads, L|S, D) and a per-key bias (S,) or (B, S) -> q', k', v' (B, heads, L|S, D') and the
    scale the kernel must use (with `kernel_takes_scale`) or will use (without: 1/sqrt(D')).

    `scale`: the logit scale of the attention being replaced (None: 1/sqrt(D)).
    """
    d = q.shape[-1]
    wide = padded_dim(d)
    wanted = scale if scale is not None else 1.0 / math.sqrt(d)
    kernel_scale = wanted if kernel_takes_scale else 1.0 / math.sqrt(wide)
    split = wide**0.25
    bias = bias.to(device=k.device, dtype=torch.promote_types(k.dtype, torch.float32))
    column = bias / (kernel_scale * split)
    column = column.view(1, 1, -1, 1) if column.dim() == 1 else column[:, None, :, None]
    q_wide = _pad(q * (wanted / kernel_scale) if wanted != kernel_scale else q, wide, split)
    k_wide = _pad(k, wide, column.to(k.dtype).expand(k.shape[0], k.shape[1], -1, 1))
    v_wide = _pad(v, wide, None)
    return q_wide, k_wide, v_wide, kernel_scale


def _pad(x: torch.Tensor, wide: int, first: torch.Tensor | float | None) -> torch.Tensor:
    """x (B, heads, L, D) widened to D' with `first` in channel D (a tensor, a constant, or zero) and zeros after."""
    out = x.new_zeros(*x.shape[:-1], wide)
    out[..., : x.shape[-1]] = x
    if first is not None:
        out[..., x.shape[-1] : x.shape[-1] + 1] = first
    return out
