"""Stand-in for the hosts' backend/attention.py: `attention_function` as its PyTorch (SDPA) flavour; the one
stand-in of it, for the Flux stand-ins here and the Neo DiT stand-ins (stub_dit, through stub_dit/neo_parts.py).

Signature of Forge's and Neo's `attention_pytorch`: (q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False, skip_output_reshape=False, **kwargs). With `skip_reshape` the inputs are
(B, heads, L, D); otherwise (B, L, heads*D). The output is (B, L, heads*D), or (B, heads, L, D) with
`skip_output_reshape` (Neo). Neo also passes `transformer_options`, which it ignores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_function(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
    attn_precision: object = None,
    skip_reshape: bool = False,
    skip_output_reshape: bool = False,
    **kwargs: object,
) -> torch.Tensor:
    if not skip_reshape:
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out if skip_output_reshape else out.transpose(1, 2).flatten(2)
