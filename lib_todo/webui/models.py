"""What the webui's model object tells ToDo: which host runs it, its native size, and whether ToDo can serve it."""

from __future__ import annotations

from typing import Any

from .. import backends
from ..backends.dit import DitFamily


def is_forge(sd_model: Any) -> bool:
    """Forge, reForge and Forge Neo keep the UNet patcher in `forge_objects`."""
    return hasattr(sd_model, "forge_objects")


def forge_diffusion_model(sd_model: Any) -> Any:
    """The network inside Forge's UNet patcher (`forge_objects.unet.model.diffusion_model`), or None."""
    patcher = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
    return getattr(getattr(patcher, "model", None), "diffusion_model", None)


def is_unet_model(sd_model: Any) -> bool:
    """An SD1.x, SD2.x or SDXL model, by the webui's flags (Forge Neo has no is_sd2)."""
    return any(getattr(sd_model, flag, False) for flag in ("is_sd1", "is_sd2", "is_sdxl"))


def dit_family_of(sd_model: Any) -> DitFamily | None:
    """The DiT family of the network in Forge's / Neo's patcher, when ToDo serves it (read from the network:
    Forge sets no flag for most DiTs), or None (a UNet, not Forge, or a model no family knows)."""
    if not is_forge(sd_model) or is_unet_model(sd_model):
        return None
    return backends.dit_family(forge_diffusion_model(sd_model), "forge")


def a1111_unet(sd_model: Any) -> Any:
    """A1111's ldm/sgm UNet (`sd_model.model.diffusion_model`), or None."""
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def native_size(sd_model: Any) -> int | None:
    """Training size in pixels, from the webui's model flags (None lets the core guess from the layout, or
    takes a DiT family's own)."""
    if getattr(sd_model, "is_sdxl", False):
        return 1024
    if getattr(sd_model, "is_sd2", False) and getattr(sd_model, "parameterization", "") == "v":
        return 768
    if getattr(sd_model, "is_sd1", False) or getattr(sd_model, "is_sd2", False):
        return 512
    return None


def unsupported_reason(sd_model: Any, opts: Any) -> str | None:
    """Why ToDo cannot run on this model with these webui options, or None."""
    if is_forge(sd_model):
        if not is_unet_model(sd_model):
            return _forge_dit_reason(sd_model)  # None for a DiT family ToDo serves: TensorRT, HyperTile act on UNets
    elif getattr(sd_model, "is_sd3", False):
        return "SD3 is not supported (its MMDiT joint attention is not one of the DiT families ToDo serves)"
    elif a1111_unet(sd_model) is None:
        return "no UNet found on this model"
    if tensorrt_active():
        return "a TensorRT UNet is active and bypasses the PyTorch UNet"
    if getattr(opts, "hypertile_enable_unet", False):
        return "HyperTile U-Net is on (both tile self-attention; use one of them)"
    return None


def _forge_dit_reason(sd_model: Any) -> str | None:
    """None for a DiT family ToDo serves; else which model it is and why ToDo cannot serve it."""
    reason = backends.forge_unsupported_reason(forge_diffusion_model(sd_model))
    if reason is None:
        return None
    return f"this model ({type(sd_model).__name__}) is not supported: {reason}"


def tensorrt_active() -> bool:
    """Whether A1111's SdUnet (TensorRT) replaces the PyTorch UNet."""
    try:
        from modules import sd_unet
    except ImportError:
        return False
    return getattr(sd_unet, "current_unet", None) is not None
