"""The Ernie-Image family (`ernie`): diffusers' ErnieImageTransformer2DModel at ERNIE-Image's published width (32
heads of 128, hidden 4096, MLP 12288, text dim 3072), random weights, batch 1.

On the CPU one layer (single-stream attention over [image, text], image first; MLP) in fp32, with the model's own
patch embedding, RoPE, time embedding and final layer; on CUDA the whole published depth (36 layers) in bf16
(UNTESTED ON A GPU so far). Inputs: a smooth 128-channel /16 latent (the Flux.2 VAE; patch 1: 16 px a token), 256
text tokens, all valid (`text_lens`), timestep 500. Sizes: native 1024 px (the pipeline's default), and 2048 px.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..family import Size, image_size
from . import dit

TEXT_TOKENS = 256
SPEC = dit.Published(
    "ErnieImageTransformer2DModel",
    {"hidden_size": 4096, "num_attention_heads": 32, "num_layers": 36, "ffn_hidden_size": 12288,
     "in_channels": 128, "out_channels": 128, "patch_size": 1, "text_in_dim": 3072, "rope_theta": 256,
     "rope_axes_dim": (32, 48, 48), "eps": 1e-6, "qk_layernorm": True},
    heads_key="num_attention_heads", width_key="hidden_size", scaled=("ffn_hidden_size",),
    depth={"num_layers": 1},
)  # fmt: skip  # baidu/ERNIE-Image transformer/config.json


def inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(hidden_states (1, 128, H/16, W/16), timestep, text_bth (1, T, 3072), text_lens (1,))."""
    h, w = dit.tokens(size)
    cfg = module.config
    kwargs = {
        "hidden_states": dit.smooth_latent(cfg.in_channels, 1, h, w, g, patch=1)[:, 0][None],
        "timestep": torch.tensor([500.0]),
        "text_bth": torch.randn(1, TEXT_TOKENS, cfg.text_in_dim, generator=g),
        "text_lens": torch.tensor([TEXT_TOKENS]),
    }
    return kwargs, (h, w)


SIZES = {"cuda": "1024,2048", "cpu": "1024,2048", "quick": "272"}
FAMILIES = (
    dit.dit_family(
        "ernie", "Ernie-Image: 1 full-width layer fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", SPEC,
        inputs, f"{TEXT_TOKENS} text tokens", SIZES, lambda text: image_size(text, multiple=16),
    ),
)  # fmt: skip
