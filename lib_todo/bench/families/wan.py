"""The Wan family (`wan`): diffusers' WanTransformer3DModel at Wan 2.2 A14B's published width (40 heads of 128,
hidden 5120, MLP 13824, text dim 4096: the same as Wan 2.1 14B), random weights, batch 1, text-to-video.

On the CPU one block (self-attention over the video tokens, cross-attention to the text, MLP) in fp32, with the
model's own patch embedding, 3-D RoPE, condition embedders and head; on CUDA the whole published depth (40 blocks;
a Wan 2.2 pipeline runs two such experts, one per step) in bf16 (UNTESTED ON A GPU so far). Inputs: a smooth
16-channel latent of (frames - 1) / 4 + 1 latent frames (the Wan VAE's 4x time compression) at 1/8 of the pixel
size; 512 text tokens (umT5, which the pipeline pads to 512); timestep 500. Sizes are videos (`--sizes 480p x 17
frames`, `832x480x33`): 480p with 17 and 33 frames (5 and 9 latent frames of a 30 x 52 token grid: 7,800 and
14,040 video tokens). ToDo keeps one key per 1 x f x f cell of each frame; the bound attends to one key.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from ..family import Size, video_size
from . import dit

TEXT_TOKENS = 512
SPEC = dit.Published(
    "WanTransformer3DModel",
    {"patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 16,
     "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
     "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
     "added_kv_proj_dim": None, "rope_max_seq_len": 1024},
    heads_key="num_attention_heads", scaled=("ffn_dim",),
    depth={"num_layers": 1},
)  # fmt: skip  # Wan-AI Wan 2.1 / 2.2 T2V 14B transformer/config.json


def latent_frames(frames: int) -> int:
    """Latent frames of a `frames`-frame video: the first frame alone, then one per 4 (17 -> 5, 33 -> 9)."""
    return (frames - 1) // 4 + 1


def inputs(module: nn.Module, size: Size, g: torch.Generator) -> tuple[dict[str, Any], tuple[int, int]]:
    """forward(hidden_states (1, 16, T, H/8, W/8), timestep, encoder_hidden_states (1, 512, 4096))."""
    lh, lw = dit.latent_grid(size)
    cfg = module.config
    kwargs = {
        "hidden_states": dit.smooth_latent(cfg.in_channels, latent_frames(size.frames), lh, lw, g)[None],
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, cfg.text_dim, generator=g),
    }
    return kwargs, (lh // 2, lw // 2)


SIZES = {"cuda": "480p x 17 frames,480p x 33 frames", "cpu": "480p x 17 frames,480p x 33 frames",
         "quick": "272x272x5"}  # fmt: skip
FAMILIES = (
    dit.dit_family(
        "wan", "Wan 2.2 14B: 1 full-width block fp32 on CPU, whole transformer bf16 on CUDA (diffusers; video)",
        SPEC, inputs, f"{TEXT_TOKENS} text tokens", SIZES, partial(video_size, default_frames=17),
        bound_words="one video key",
    ),
)  # fmt: skip
