"""The Qwen-Image family (`qwen`): diffusers' QwenImageTransformer2DModel at Qwen-Image's published width (24
heads of 128, hidden 3072, MLP 4x, text dim 3584), random weights, batch 1.

On the CPU one main block (a double-stream block over [text, image]) in fp32, with the model's own embedders,
RoPE and output layers around it; on CUDA the whole published depth (60 blocks) in bf16 (UNTESTED ON A GPU so
far). Inputs: the packed latent (2x2 patches of a /8, 16-channel latent: 64 channels a token) of a smooth field,
256 text tokens (Qwen2.5-VL embeddings of a prompt of a few sentences, the chat template's prefix dropped as the
pipeline does; a batch of one is not padded, so no mask), timestep 0.5. Sizes: native 1328 px, and 2656 px.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..family import Size, image_size
from . import dit

TEXT_TOKENS = 256
SPEC = dit.Published(
    "QwenImageTransformer2DModel",
    {"patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
     "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False,
     "axes_dims_rope": (16, 56, 56)},
    heads_key="num_attention_heads",
    depth={"num_layers": 1},
)  # fmt: skip  # Qwen/Qwen-Image transformer/config.json


def inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """Forward kwargs for a `size` image: the token grid is the /8 latent in 2x2 patches (16 px a token)."""
    h, w = dit.tokens(size)
    cfg = module.config
    kwargs = {
        "hidden_states": dit.smooth_tokens(h, w, cfg.in_channels, g),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, cfg.joint_attention_dim, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_shapes": [[(1, h, w)]],
    }
    return kwargs, (h, w)


ABOUT = f"{TEXT_TOKENS} text tokens"
SIZES = {"cuda": "1328,2656", "cpu": "1328,2656", "quick": "272"}
FAMILIES = (
    dit.dit_family(
        "qwen", "Qwen-Image: 1 full-width block fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", SPEC,
        inputs, ABOUT, SIZES, lambda text: image_size(text, multiple=16),
    ),
)  # fmt: skip
