"""Attention kernels the bench runs the UNets with: `sdpa` and `chunked` (Doggettx-style, plain torch).

Benchmark support, not part of ToDo. Tensors inside attention are (B, H, N, D): batch, heads, tokens, head dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .family import KERNELS

CHUNK_BYTES = 2 << 30  # largest score chunk of the chunked kernel (as the H100 anchors)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D), a view."""
    b, n, c = t.shape
    return t.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, limit: int = CHUNK_BYTES) -> torch.Tensor:
    """Softmax attention over (B, H, N, D) in query chunks whose score tensor stays under `limit` bytes."""
    b, h, n, d = q.shape
    m = k.shape[2]
    rows = max(1, min(n, limit // (b * h * m * q.element_size())))
    kt = k.transpose(-1, -2)
    out = torch.empty(b, h, n, v.shape[-1], dtype=q.dtype, device=q.device)
    for i in range(0, n, rows):
        scores = torch.matmul(q[:, :, i : i + rows] * d**-0.5, kt)
        out[:, :, i : i + rows] = torch.matmul(scores.softmax(dim=-1, dtype=q.dtype), v)
        del scores
    return out


def _ldm_project(attn: nn.Module, x: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
    """q, k, v of an ldm attention as (B, H, N, D); x and context are (B, N, C)."""
    context = x if context is None else context
    return [split_heads(t, attn.heads) for t in (attn.to_q(x), attn.to_k(context), attn.to_v(context))]


def _ldm_sdpa_forward(self: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None, mask: Any = None):
    """ldm CrossAttention.forward with SDPA; x is (B, N, C)."""
    if mask is not None:
        raise NotImplementedError("bench kernels take no mask")
    q, k, v = _ldm_project(self, x, context)
    return self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))


def _ldm_chunked_forward(self: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None, mask: Any = None):
    """ldm CrossAttention.forward with chunked_attention; x is (B, N, C)."""
    if mask is not None:
        raise NotImplementedError("bench kernels take no mask")
    q, k, v = _ldm_project(self, x, context)
    return self.to_out(merge_heads(chunked_attention(q, k, v)))


LDM_FORWARDS = {"sdpa": _ldm_sdpa_forward, "chunked": _ldm_chunked_forward}


class ChunkedAttnProcessor:
    """diffusers attention processor with the chunked kernel; k/v come from `encoder_hidden_states` when
    given, which is how ToDo's hook hands `attn1` its downsampled context."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        unusual = (attn.group_norm, attn.spatial_norm, attn.norm_q, attn.norm_k, attention_mask)
        if hidden_states.ndim != 3 or any(x is not None for x in unusual):
            raise NotImplementedError("ChunkedAttnProcessor covers the plain attention of SD UNets only")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = (
            split_heads(t, attn.heads) for t in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        )
        out = attn.to_out[1](attn.to_out[0](merge_heads(chunked_attention(q, k, v))))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def transformer_blocks(unet: nn.Module) -> list[nn.Module]:
    """Every BasicTransformerBlock (ldm, sgm and diffusers share the name)."""
    return [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]


@contextmanager
def attention_kernel(unet: nn.Module, family: str, kernel: str) -> Iterator[None]:
    """Run `unet` with attention kernel `kernel` ("sdpa" or "chunked"); the original is restored after."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    if family == "ldm":
        classes = {type(getattr(b, name)) for b in transformer_blocks(unet) for name in ("attn1", "attn2")}
        saved = {cls: cls.__dict__["forward"] for cls in classes}
        try:
            for cls in classes:
                cls.forward = LDM_FORWARDS[kernel]
            yield
        finally:
            for cls, forward in saved.items():
                cls.forward = forward
        return
    if kernel == "sdpa":  # diffusers' default processor is SDPA (AttnProcessor2_0)
        yield
        return
    saved_processors = unet.attn_processors
    unet.set_attn_processor(ChunkedAttnProcessor())
    try:
        yield
    finally:
        unet.set_attn_processor(saved_processors)
