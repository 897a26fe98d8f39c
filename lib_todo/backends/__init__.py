"""Backends: how ToDo gets into each kind of model, and the one table that says which serves a model.

UNets (SD1.x, SD2.x, SDXL):
- `unet_hooks`: forward pre-hooks on A1111's ldm/sgm UNets and diffusers' UNet2DConditionModel.
- `forge_unet`: an attn1 patch on a Forge / reForge / Forge Neo UNet patcher.

DiTs: one module per family (`flux`, ...), each a `dit.DitFamily` per host, listed in `DIT_FAMILIES`; the engine
(`dit`) runs them all, installed per model call by `dit_forge` (a UNet function wrapper on Forge, Neo, reForge)
or `dit_diffusers` (hooks on a diffusers transformer). Callers ask this table (`dit_family`,
`patch_forge_patcher`) and never name a family.
"""

from __future__ import annotations

from typing import Any

from ..layout import is_ldm_unet
from ..settings import TodoSettings
from ..state import PassState
from . import anima, ernie, flux, krea, lumina, qwen, wan
from .dit import DitFamily, installation
from .dit_forge import patch_dit_patcher
from .forge_unet import patch_unet_patcher

# Networks ToDo recognises and cannot serve, by class name: why, in words for the console.
UNSERVED = {
    "SVDQFluxTransformer2DModel": "Nunchaku's SVDQ Flux runs its attention inside fused kernels that ToDo cannot reach",
}
DIT_FAMILIES: tuple[DitFamily, ...] = (
    *flux.FAMILIES,
    *qwen.FAMILIES,
    *lumina.FAMILIES,
    *wan.FAMILIES,
    *anima.FAMILIES,
    *ernie.FAMILIES,
    *krea.FAMILIES,
)


def dit_family(network: Any, host: str) -> DitFamily | None:
    """The family of a DiT network on `host` ("forge" or "diffusers"), or None when no family knows it."""
    return next((f for f in DIT_FAMILIES if f.host == host and f.recognise(network)), None)


def served_families(host: str) -> str:
    """The DiT families ToDo serves on `host`, for messages: "Flux, Qwen-Image, ..."."""
    return ", ".join(dict.fromkeys(f.name for f in DIT_FAMILIES if f.host == host))


def forge_unsupported_reason(network: Any) -> str | None:
    """Why ToDo cannot serve the network inside a Forge / Neo / reForge patcher, or None when it can."""
    if network is None:
        return "no diffusion model found in forge_objects.unet"
    if is_ldm_unet(network):
        return None
    if type(network).__name__ in UNSERVED:
        return f"{type(network).__name__}: {UNSERVED[type(network).__name__]}"
    family = dit_family(network, "forge")
    if family is None:
        known = f"SD1.x, SD2.x, SDXL and {served_families('forge')}"
        return f"{type(network).__name__} is not a model ToDo knows (it serves {known})"
    try:
        installation(family, network)
    except TypeError as err:  # a variant whose attention ToDo cannot reach (fused kernels, its own code)
        return str(err)
    return family.why_not(network)


def patch_forge_patcher(patcher: Any, settings: TodoSettings, native_px: int | None = None) -> tuple[Any, PassState]:
    """A clone of a Forge / Neo / reForge UNet patcher with ToDo, and its state: the attn1 patch for a UNet, the
    DiT wrapper for a DiT family. TypeError naming the model when no backend serves it."""
    network = getattr(patcher.model, "diffusion_model", None)
    reason = forge_unsupported_reason(network)
    if reason:
        raise TypeError(reason)
    if is_ldm_unet(network):
        return patch_unet_patcher(patcher, settings, native_px)
    return patch_dit_patcher(patcher, dit_family(network, "forge"), settings, native_px)
