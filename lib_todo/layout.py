"""Finding a UNet's attention levels from its structure."""

from __future__ import annotations

from torch import nn

from .plan import UnetLayout, layout_for

TRANSFORMERS = ("SpatialTransformer", "SpatialVideoTransformer", "Transformer2DModel")


def is_diffusers_unet(unet: nn.Module) -> bool:
    """diffusers' UNet2DConditionModel (and look-alikes)."""
    return hasattr(unet, "down_blocks") and hasattr(unet, "config")


def is_ldm_unet(unet: nn.Module) -> bool:
    """ldm/sgm's UNetModel, also Forge's and ldm_patched's ports of it."""
    return hasattr(unet, "input_blocks") and hasattr(unet, "middle_block")


def layout_of(unet: nn.Module, native_px: int | None = None) -> UnetLayout:
    """The attention levels of an ldm-style or diffusers UNet; `native_px` overrides the native size."""
    if is_diffusers_unet(unet):
        return _diffusers_layout(unet, native_px)
    if is_ldm_unet(unet):
        return layout_for(_ldm_attention_ds(unet), native_px)
    raise TypeError(
        f"ToDo: {type(unet).__name__} is not a UNet ToDo knows (an ldm/sgm UNetModel with input_blocks, "
        "or a diffusers UNet2DConditionModel); on Forge use lib_todo.forge.patch_unet_patcher"
    )


def _ldm_attention_ds(unet: nn.Module) -> set[int]:
    """Walk input_blocks then middle_block, doubling ds at each Downsample (also inside an up/down ResBlock)."""
    ds, found = 1, set()
    for block in [*unet.input_blocks, unet.middle_block]:
        for layer in block:
            name = type(layer).__name__
            if name in TRANSFORMERS:
                found.add(ds)
            if name == "Downsample" or type(getattr(layer, "h_upd", None)).__name__ == "Downsample":
                ds *= 2
    return found


def _diffusers_layout(unet: nn.Module, native_px: int | None) -> UnetLayout:
    found = {2**i for i, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")}
    if hasattr(getattr(unet, "mid_block", None), "attentions"):
        found.add(2 ** (len(unet.down_blocks) - 1))
    layout = layout_for(found, native_px)
    sample_size = getattr(unet.config, "sample_size", None)
    if native_px is None and isinstance(sample_size, int) and sample_size > 0:
        layout = UnetLayout(layout.attention_ds, sample_size)
    return layout
