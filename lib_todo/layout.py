"""Where a model attends: its self-attention levels on the latent grid, read from its structure.

Levels are counted from the highest-resolution level that has self-attention: SD1.x/SD2.x attend at /1, /2,
/4, /8, so level 1 is /1; SDXL attends at /2 and /4 only, so its level 1 is /2. A DiT has one level, planned on
its token grid itself (`backends.dit.DitFamily.layout`: ds 1, the native side in tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

TRANSFORMERS = ("SpatialTransformer", "SpatialVideoTransformer", "Transformer2DModel")
FAMILIES = ("unet", "dit")


@dataclass(frozen=True)
class AttentionLayout:
    """What ToDo needs to know of a model.

    attention_ds: the latent downsampling values that have self-attention, highest resolution first.
    native_latent: the side of the latent the model was trained at (64 for SD1.x, 128 for SDXL and Flux).
    family: "unet" (levels of a UNet) or "dit" (one joint text+image sequence on a patch grid).
    """

    attention_ds: tuple[int, ...]
    native_latent: int
    family: str = "unet"

    @property
    def level_ds(self) -> tuple[int, ...]:
        """Downsampling of level 1 and level 2 (the levels ToDo acts on)."""
        return self.attention_ds[:2]

    @property
    def is_sdxl_like(self) -> bool:
        """A UNet without attention at full resolution: most self-attention sits on the second level."""
        return self.family == "unet" and bool(self.attention_ds) and self.attention_ds[0] >= 2


def layout_for(attention_ds: set[int] | tuple[int, ...], native_px: int | None = None) -> AttentionLayout:
    """A UNet layout from the attention levels found in it; `native_px` overrides the native size guess."""
    levels = tuple(sorted(attention_ds))
    if native_px:
        native = native_px // 8
    else:
        native = 128 if levels and levels[0] >= 2 else 64
    return AttentionLayout(levels, native)


def is_diffusers_unet(unet: nn.Module) -> bool:
    """diffusers' UNet2DConditionModel (and look-alikes)."""
    return hasattr(unet, "down_blocks") and hasattr(unet, "config")


def is_ldm_unet(unet: nn.Module) -> bool:
    """ldm/sgm's UNetModel, also Forge's and ldm_patched's ports of it."""
    return hasattr(unet, "input_blocks") and hasattr(unet, "middle_block")


def layout_of(unet: nn.Module, native_px: int | None = None) -> AttentionLayout:
    """The attention levels of an ldm-style or diffusers UNet; `native_px` overrides the native size."""
    if is_diffusers_unet(unet):
        return _diffusers_layout(unet, native_px)
    if is_ldm_unet(unet):
        return layout_for(_ldm_attention_ds(unet), native_px)
    raise TypeError(
        f"ToDo: {type(unet).__name__} is not a UNet ToDo knows (an ldm/sgm UNetModel with input_blocks, "
        "or a diffusers UNet2DConditionModel); on Forge use lib_todo.patch_unet_patcher"
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


def _diffusers_layout(unet: nn.Module, native_px: int | None) -> AttentionLayout:
    found = {2**i for i, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")}
    if hasattr(getattr(unet, "mid_block", None), "attentions"):
        found.add(2 ** (len(unet.down_blocks) - 1))
    layout = layout_for(found, native_px)
    sample_size = getattr(unet.config, "sample_size", None)
    if native_px is None and isinstance(sample_size, int) and sample_size > 0:
        layout = AttentionLayout(layout.attention_ds, sample_size)
    return layout
