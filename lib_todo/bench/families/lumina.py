"""The NextDiT families: Z-Image (`zimage`, diffusers' ZImageTransformer2DModel) and Lumina 2 (`lumina2`,
Lumina2Transformer2DModel) at their published widths, random weights, batch 1.

- Z-Image (Tongyi-MAI/Z-Image-Turbo): 30 heads of 128 (hidden 3840, MLP 8/3 x), caption dim 2560 (Qwen3-4B);
  256 caption tokens (a multiple of 32: no caption padding); main layers over [image, caption], image first.
- Lumina 2 (Alpha-VLLM/Lumina-Image-2.0, also Neta Lumina): 24 query heads of 96 and 8 key/value heads (hidden
  2304), caption dim 2304 (Gemma-2-2B); 256 caption tokens (the pipeline's maximum, its system prompt included),
  all valid; main layers over [caption, image].

On the CPU one main layer in fp32 and no refiner (the classes allow none: the noise refiners, 2 of the published
32 image-attention blocks, which ToDo downsamples too, and the caption-only context refiners, which it never
touches, are left out so the rows time one joint block), with the model's own embedders, RoPE and final layer; on
CUDA the whole published depth (Z-Image: 30 layers and 2 + 2 refiners; Lumina 2: 26 layers and 2 + 2 refiners) in
bf16 (UNTESTED ON A GPU so far). The image input is a smooth 16-channel /8 latent, timestep 0.5. Sizes: native
1024 px, and 2048 px.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..family import Size, image_size
from . import dit

CAPTION_TOKENS = 256
Z_IMAGE = dit.Published(
    "ZImageTransformer2DModel",
    {"all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": 3840, "n_layers": 30,
     "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True,
     "cap_feat_dim": 2560, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [32, 48, 48],
     "axes_lens": [1536, 512, 512]},
    heads_key="n_heads", width_key="dim", kv_key="n_kv_heads",
    depth={"n_layers": 1, "n_refiner_layers": 0},
)  # fmt: skip  # Tongyi-MAI/Z-Image-Turbo transformer/config.json
LUMINA2 = dit.Published(
    "Lumina2Transformer2DModel",
    {"sample_size": 128, "patch_size": 2, "in_channels": 16, "hidden_size": 2304, "num_layers": 26,
     "num_refiner_layers": 2, "num_attention_heads": 24, "num_kv_heads": 8, "multiple_of": 256,
     "ffn_dim_multiplier": None, "norm_eps": 1e-5, "scaling_factor": 1.0, "axes_dim_rope": (32, 32, 32),
     "axes_lens": (300, 512, 512), "cap_feat_dim": 2304},
    heads_key="num_attention_heads", head_dim=96, width_key="hidden_size", kv_key="num_kv_heads",
    depth={"num_layers": 1, "num_refiner_layers": 0},
)  # fmt: skip  # Lumina 2's transformer/config.json (as Neta Lumina's)


def z_image_inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(x=[(16, 1, H/8, W/8)], t, cap_feats=[(T, 2560)]): one item, its latent and caption as lists."""
    lh, lw = dit.latent_grid(size)
    kwargs = {
        "x": [dit.smooth_latent(module.config.in_channels, 1, lh, lw, g)],
        "t": torch.tensor([0.5]),
        "cap_feats": [torch.randn(CAPTION_TOKENS, module.config.cap_feat_dim, generator=g)],
    }
    return kwargs, (lh // 2, lw // 2)


def lumina2_inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(hidden_states (1, 16, H/8, W/8), timestep, encoder_hidden_states (1, T, 2304), mask (1, T))."""
    lh, lw = dit.latent_grid(size)
    kwargs = {
        "hidden_states": dit.smooth_latent(module.config.in_channels, 1, lh, lw, g)[:, 0][None],
        "timestep": torch.tensor([0.5]),
        "encoder_hidden_states": torch.randn(1, CAPTION_TOKENS, module.config.cap_feat_dim, generator=g),
        "encoder_attention_mask": torch.ones(1, CAPTION_TOKENS, dtype=torch.bool),
    }
    return kwargs, (lh // 2, lw // 2)


ABOUT = f"{CAPTION_TOKENS} caption tokens"
SIZES = {"cuda": "1024,2048", "cpu": "1024,2048", "quick": "272"}


def _size(text: str) -> Size:
    return image_size(text, multiple=16)


FAMILIES = (
    dit.dit_family(
        "zimage", "Z-Image: 1 full-width layer fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", Z_IMAGE,
        z_image_inputs, ABOUT, SIZES, _size,
    ),
    dit.dit_family(
        "lumina2", "Lumina 2: 1 full-width layer fp32 on CPU, whole transformer bf16 on CUDA (diffusers)", LUMINA2,
        lumina2_inputs, ABOUT, SIZES, _size,
    ),
)  # fmt: skip
