"""The Krea 2 family (`krea`): diffusers' Krea2Transformer2DModel at Krea 2's published width (48 query heads
and 12 key/value heads of 128, hidden 6144, MLP 16384; text: 12 tapped layers of 2560), random weights, batch 1.

On the CPU one main block (single-stream attention over [text, image], text first; MLP) in fp32 and no
text-fusion block (the class allows none: its layerwise and refiner blocks, 2 + 2 in the published model, attend
over the text only and ToDo never touches them), with the model's own text projection, patch embedding, RoPE and
final layer; on CUDA the whole published depth (28 blocks and the text fusion) in bf16 (UNTESTED ON A GPU so far).
Inputs: the packed latent (2x2 patches of a /8, 16-channel latent) of a smooth field, position ids as the pipeline
writes them ((0, row, col) for the image after the text's zeros), 256 text tokens, timestep 0.5. Sizes: native
1024 px (the pipeline's default), and 2048 px.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..family import Size, image_size
from . import dit

TEXT_TOKENS = 256
SPEC = dit.Published(
    "Krea2Transformer2DModel",
    {"in_channels": 64, "num_layers": 28, "attention_head_dim": 128, "num_attention_heads": 48,
     "num_key_value_heads": 12, "intermediate_size": 16384, "timestep_embed_dim": 256, "text_hidden_dim": 2560,
     "num_text_layers": 12, "text_num_attention_heads": 20, "text_num_key_value_heads": 20,
     "text_intermediate_size": 6912, "num_layerwise_text_blocks": 2, "num_refiner_text_blocks": 2,
     "axes_dims_rope": (32, 48, 48), "rope_theta": 1000.0, "norm_eps": 1e-5},
    heads_key="num_attention_heads", kv_key="num_key_value_heads", scaled=("intermediate_size",),
    depth={"num_layers": 1, "num_layerwise_text_blocks": 0, "num_refiner_text_blocks": 0},
)  # fmt: skip  # krea/Krea-2-Raw transformer/config.json


def inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(hidden_states (1, N, 64), encoder_hidden_states (1, T, 12, 2560), timestep, position_ids (T+N, 3))."""
    h, w = dit.tokens(size)
    cfg = module.config
    text = torch.randn(1, TEXT_TOKENS, cfg.num_text_layers, cfg.text_hidden_dim, generator=g)
    kwargs = {
        "hidden_states": dit.smooth_tokens(h, w, cfg.in_channels, g),
        "encoder_hidden_states": text,
        "timestep": torch.tensor([0.5]),
        "position_ids": torch.cat([torch.zeros(TEXT_TOKENS, 3), dit.grid_ids(h, w)]),
    }
    return kwargs, (h, w)


SIZES = {"cuda": "1024,2048", "cpu": "1024,2048", "quick": "272"}
FAMILIES = (
    dit.dit_family(
        "krea", "Krea 2: 1 full-width block fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", SPEC, inputs,
        f"{TEXT_TOKENS} text tokens", SIZES, lambda text: image_size(text, multiple=16),
    ),
)  # fmt: skip
