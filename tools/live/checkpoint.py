"""A random-weight SD1.5 checkpoint in the original (ldm) layout, for live webui tests without a download.

Keys and shapes are those of the published SD1.5 checkpoints, so every webui loads it as SD1.x:
- `model.diffusion_model.*`: the ldm UNetModel of v1-inference.yaml (built by lib_todo.bench.unets), with the
  layers ldm zero-initialises (attention `proj_out`, ResBlock `out`, the final `out`) given random values, or
  ToDo could never change an image;
- `first_stage_model.*`: the KL autoencoder (ldm Encoder/Decoder, ch 128, ch_mult 1,2,4,4, z 4);
- `cond_stage_model.transformer.text_model.*`: the CLIP ViT-L/14 text tower (49408 tokens, 77 positions,
  width 768, 12 layers, MLP 3072), written here key by key, so `transformers` is not needed.

Needs torch, safetensors and `stable-diffusion-sdkit` (the `ldm` package). Deterministic for a seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
CLIP_VOCAB, CLIP_POSITIONS, CLIP_WIDTH, CLIP_LAYERS, CLIP_MLP = 49408, 77, 768, 12, 3072
VAE_CONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
VAE_EMBED_DIM = 4


def unet_state(seed: int) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*`: the SD1.5 ldm UNet at full width, no all-zero layer left."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lib_todo.bench.unets import build

    unet = build("ldm-sd15", width=320, seed=seed)
    return {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}


def vae_state(seed: int) -> dict[str, torch.Tensor]:
    """`first_stage_model.*`: encoder, decoder and the two 1x1 convs around the latent."""
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    torch.manual_seed(seed + 2)
    z = VAE_CONFIG["z_channels"]
    parts = {
        "encoder": Encoder(**VAE_CONFIG),
        "decoder": Decoder(**VAE_CONFIG),
        "quant_conv": torch.nn.Conv2d(2 * z, 2 * VAE_EMBED_DIM, 1),
        "post_quant_conv": torch.nn.Conv2d(VAE_EMBED_DIM, z, 1),
    }
    return {f"first_stage_model.{name}.{k}": v for name, part in parts.items() for k, v in part.state_dict().items()}


def clip_text_state(seed: int) -> dict[str, torch.Tensor]:
    """`cond_stage_model.transformer.text_model.*`: CLIP's text tower, scaled as CLIP initialises it.

    Embeddings N(0, 0.02) / N(0, 0.01); attention in-projections N(0, w^-0.5 (2L)^-0.5), out-projection
    N(0, w^-0.5); MLP fc1 N(0, (2w)^-0.5), fc2 like the in-projections; biases 0, layer norms 1/0.
    """
    gen = torch.Generator().manual_seed(seed + 3)
    w = CLIP_WIDTH
    in_std, out_std, fc_std = w**-0.5 * (2 * CLIP_LAYERS) ** -0.5, w**-0.5, (2 * w) ** -0.5

    def normal(std: float, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.ones(w), f"{name}.bias": torch.zeros(w)}

    def linear(name: str, std: float, n_out: int, n_in: int) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": normal(std, n_out, n_in), f"{name}.bias": torch.zeros(n_out)}

    state = {
        "embeddings.token_embedding.weight": normal(0.02, CLIP_VOCAB, w),
        "embeddings.position_embedding.weight": normal(0.01, CLIP_POSITIONS, w),
        "embeddings.position_ids": torch.arange(CLIP_POSITIONS, dtype=torch.int64)[None],
    }
    for i in range(CLIP_LAYERS):
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            state.update(linear(f"{layer}.self_attn.{proj}", in_std, w, w))
        state.update(linear(f"{layer}.self_attn.out_proj", out_std, w, w))
        state.update(norm(f"{layer}.layer_norm1"))
        state.update(linear(f"{layer}.mlp.fc1", fc_std, CLIP_MLP, w))
        state.update(linear(f"{layer}.mlp.fc2", in_std, w, CLIP_MLP))
        state.update(norm(f"{layer}.layer_norm2"))
    state.update(norm("final_layer_norm"))
    return {f"cond_stage_model.transformer.text_model.{k}": v for k, v in state.items()}


def make_checkpoint(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Write the whole random SD1.5 checkpoint to `path` (.safetensors); floats stored as `dtype`.

    Written to a temporary name first, so an interrupted run never leaves a half file under `path`.
    """
    from safetensors.torch import save_file

    state = {**unet_state(seed), **vae_state(seed), **clip_text_state(seed)}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"non-finite weights in {bad[:3]}")
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(state, str(partial), metadata={"format": "pt", "sd-webui-todo": f"random SD1.5, seed {seed}"})
    partial.replace(path)
    return path
