"""The Anima family (`anima`): diffusers' CosmosTransformer3DModel (what diffusers runs Anima on) at Anima's
published width (16 heads of 128, hidden 2048, MLP 4x, text dim 1024, AdaLN-LoRA 256, RoPE extrapolated 4x in
height and width), random weights, batch 1.

On the CPU one block (self-attention over the image tokens, cross-attention to the text, MLP) in fp32, with the
model's own patch embedding, RoPE, time embedding and final layer; on CUDA the whole published depth (28 blocks)
in bf16 (UNTESTED ON A GPU so far). Anima concatenates a padding-mask channel to the latent
(`concat_padding_mask`); diffusers does it through torchvision, which the bench does not need otherwise, so the
bench leaves that one input channel out (one channel of the patch embedding: no change to the blocks). Inputs: a
smooth 16-channel /8 latent of one frame, 512 text tokens (Anima's text conditioner pads its output to 512),
timestep 0.5. Sizes: native 1024 px (Anima's pipeline: 128 latents x 8), and 2048 px. ToDo downsamples the
image-only self-attention; the bound attends to one image key.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..family import Size, image_size
from . import dit

TEXT_TOKENS = 512
SPEC = dit.Published(
    "CosmosTransformer3DModel",
    {"in_channels": 16, "out_channels": 16, "num_attention_heads": 16, "attention_head_dim": 128, "num_layers": 28,
     "mlp_ratio": 4.0, "text_embed_dim": 1024, "adaln_lora_dim": 256, "max_size": (128, 240, 240),
     "patch_size": (1, 2, 2), "rope_scale": (1.0, 4.0, 4.0), "concat_padding_mask": False,
     "extra_pos_embed_type": None},
    heads_key="num_attention_heads",
    depth={"num_layers": 1},
)  # fmt: skip  # Anima (Cosmos-Predict2 2B): Forge Neo's detection of Anima checkpoints; padding mask left out


def inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(hidden_states (1, 16, 1, H/8, W/8), timestep, encoder_hidden_states (1, 512, 1024))."""
    lh, lw = dit.latent_grid(size)
    cfg = module.config
    kwargs = {
        "hidden_states": dit.smooth_latent(cfg.in_channels, 1, lh, lw, g)[None],
        "timestep": torch.tensor([0.5]),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, cfg.text_embed_dim, generator=g),
    }
    return kwargs, (lh // 2, lw // 2)


SIZES = {"cuda": "1024,2048", "cpu": "1024,2048", "quick": "272"}
FAMILIES = (
    dit.dit_family(
        "anima", "Anima (Cosmos): 1 full-width block fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", SPEC,
        inputs, f"{TEXT_TOKENS} text tokens", SIZES, lambda text: image_size(text, multiple=16),
        bound_words="one image key",
    ),
)  # fmt: skip
