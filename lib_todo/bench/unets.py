"""Reference UNet architectures with random weights, for the benchmark and the tests (no download).

Built from the published SD1.5 and SDXL configs, either with diffusers' UNet2DConditionModel or with the
`ldm` UNetModel that A1111 runs (`stable-diffusion-sdkit` on PyPI). `width` scales the channel counts
down for tests; 320 is the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UnetSpec:
    """One architecture: how it is built and what it is fed."""

    name: str
    family: str  # "diffusers" or "ldm"
    native_px: int
    context_dim: int


SPECS = {
    "sd15": UnetSpec("sd15", "diffusers", 512, 768),
    "sdxl": UnetSpec("sdxl", "diffusers", 1024, 2048),
    "ldm-sd15": UnetSpec("ldm-sd15", "ldm", 512, 768),
    "ldm-sdxl": UnetSpec("ldm-sdxl", "ldm", 1024, 2048),
}
SDXL_POOLED_DIM = 1280
SDXL_TIME_DIM = 256


def build(name: str, width: int = 320, context_dim: int | None = None, seed: int = 0) -> nn.Module:
    """A UNet of architecture `name` (see SPECS) with random weights, in eval mode.

    Zero-initialised output layers are re-randomised so that every block changes the output and a
    change inside attention is visible.
    """
    spec = SPECS[name]
    ctx = context_dim or (spec.context_dim if width == 320 else width)
    torch.manual_seed(seed)
    builder = {"sd15": _diffusers_sd15, "sdxl": _diffusers_sdxl, "ldm-sd15": _ldm_sd15, "ldm-sdxl": _ldm_sdxl}[name]
    unet = builder(width, ctx)
    randomize_zero_layers_(unet, seed)
    return unet.eval()


def example_inputs(
    unet: nn.Module, name: str, batch: int, height_px: int, width_px: int, tokens: int = 77
) -> tuple[tuple, dict[str, Any]]:
    """(args, kwargs) for one UNet call on a latent of `height_px x width_px` pixels (1/8 size)."""
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(1234)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    latent = rand(batch, 4, height_px // 8, width_px // 8)
    timesteps = torch.full((batch,), 500.0, device=device)
    if SPECS[name].family == "ldm":
        return (latent, timesteps), {"context": rand(batch, tokens, context_dim_of(unet))}
    kwargs: dict[str, Any] = {"encoder_hidden_states": rand(batch, tokens, unet.config.cross_attention_dim)}
    if unet.config.addition_embed_type == "text_time":
        time_dim = unet.config.addition_time_embed_dim
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * time_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": rand(batch, pooled), "time_ids": rand(batch, 6).abs() * 1000}
    return (latent, timesteps), kwargs


def randomize_zero_layers_(unet: nn.Module, seed: int = 0) -> None:
    """Give every all-zero weight (ldm zero-initialises proj_out and out) small random values."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p[0].numel() ** 0.5))


class _ResizingTorch:
    """torch, with A1111's `cat` for skip connections: a mismatched first tensor is resized (nearest)."""

    def __getattr__(self, item: str) -> Any:
        return getattr(torch, item)

    @staticmethod
    def cat(tensors: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(tensors) == 2 and tensors[0].shape[-2:] != tensors[1].shape[-2:]:
            tensors = (F.interpolate(tensors[0], tensors[1].shape[-2:], mode="nearest"), tensors[1])
        return torch.cat(tensors, *args, **kwargs)


@contextmanager
def a1111_skip_resize() -> Iterator[None]:
    """Run ldm UNets as A1111 does, so latents of any multiple of 8 px (odd latents) work."""
    from ldm.modules.diffusionmodules import openaimodel

    saved = openaimodel.th
    openaimodel.th = _ResizingTorch()
    try:
        yield
    finally:
        openaimodel.th = saved


def context_dim_of(unet: nn.Module) -> int:
    """Width of the text context an ldm UNet takes (its cross-attention key input)."""
    for m in unet.modules():
        if type(m).__name__ == "BasicTransformerBlock":
            return m.attn2.to_k.in_features
    raise ValueError("no transformer block")


def _ldm_sd15(width: int, ctx: int) -> nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=width,
        attention_resolutions=[4, 2, 1],
        num_res_blocks=2,
        channel_mult=[1, 2, 4, 4],
        num_heads=8,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=ctx,
        use_checkpoint=False,
        legacy=False,
    )


def _ldm_sdxl(width: int, ctx: int) -> nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    # SDXL's layout (attention at /2 and /4 only, linear projections); this ldm takes one block per level.
    return UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=width,
        attention_resolutions=[4, 2],
        num_res_blocks=2,
        channel_mult=[1, 2, 4],
        num_head_channels=64 if width == 320 else max(8, width // 4),  # 5 heads at 320, as SDXL's first level
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=ctx,
        use_checkpoint=False,
        legacy=False,
        use_linear_in_transformer=True,
    )


def _diffusers_sd15(width: int, ctx: int) -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
        cross_attention_dim=ctx,
        attention_head_dim=8,
        norm_num_groups=32 if width >= 32 else width,
    )


def _diffusers_sdxl(width: int, ctx: int) -> nn.Module:
    from diffusers import UNet2DConditionModel

    real = width == 320
    time_dim = SDXL_TIME_DIM if real else 8
    pooled = SDXL_POOLED_DIM if real else width
    return UNet2DConditionModel(
        sample_size=128,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(width, 2 * width, 4 * width),
        layers_per_block=2,
        cross_attention_dim=ctx,
        transformer_layers_per_block=(1, 2, 10) if real else (1, 2, 2),
        attention_head_dim=(5, 10, 20) if real else (2, 4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + pooled,
        norm_num_groups=32 if width >= 32 else width,
    )
