"""What the webui's model object tells ToDo: which host runs it, its native size, and whether ToDo can serve it."""

from __future__ import annotations

from typing import Any


def is_forge(sd_model: Any) -> bool:
    """Forge, reForge and Forge Neo keep the UNet patcher in `forge_objects`."""
    return hasattr(sd_model, "forge_objects")


def a1111_unet(sd_model: Any) -> Any:
    """A1111's ldm/sgm UNet (`sd_model.model.diffusion_model`), or None."""
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def native_size(sd_model: Any) -> int | None:
    """Training size in pixels, from the webui's model flags (None lets the core guess from the layout)."""
    if getattr(sd_model, "is_sdxl", False):
        return 1024
    if getattr(sd_model, "is_sd2", False) and getattr(sd_model, "parameterization", "") == "v":
        return 768
    if getattr(sd_model, "is_sd1", False) or getattr(sd_model, "is_sd2", False):
        return 512
    return None


def unsupported_reason(sd_model: Any, opts: Any) -> str | None:
    """Why ToDo cannot run on this model with these webui options, or None."""
    if getattr(sd_model, "is_sd3", False):
        return "SD3 has no UNet self-attention to downsample"
    if is_forge(sd_model):
        if not any(getattr(sd_model, flag, False) for flag in ("is_sd1", "is_sd2", "is_sdxl")):
            return "this model is not SD1.x, SD2.x or SDXL (Flux and other DiT models are not supported)"
    elif a1111_unet(sd_model) is None:
        return "no UNet found on this model"
    if tensorrt_active():
        return "a TensorRT UNet is active and bypasses the PyTorch UNet"
    if getattr(opts, "hypertile_enable_unet", False):
        return "HyperTile U-Net is on (both tile self-attention; use one of them)"
    return None


def tensorrt_active() -> bool:
    """Whether A1111's SdUnet (TensorRT) replaces the PyTorch UNet."""
    try:
        from modules import sd_unet
    except ImportError:
        return False
    return getattr(sd_unet, "current_unet", None) is not None
