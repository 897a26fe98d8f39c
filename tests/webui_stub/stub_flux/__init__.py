"""Stand-ins for a Flux model loaded in Forge main or Forge Neo: the network (forge_flux, neo_flux), and the
`shared.sd_model` around it for the stand-in webui.

As in Forge: the engine (`FluxForgeModel`, Forge's `Flux(ForgeDiffusionEngine)`) has no `is_flux` flag
(`is_sd1/is_sd2/is_sdxl/is_sd3` are False on Forge main; Neo has only `is_sd1/is_sdxl`);
`forge_objects.unet` is a UNet patcher whose `model` (KModel) holds the network as `diffusion_model`.
Forge's sampling function calls the patcher's `model_function_wrapper`, when set, as
`wrapper(model.apply_model, {"input", "timestep", "c": {"c_crossattn", "transformer_options", ...},
"cond_or_uncond"})`; the stand-in webui's sampler does that, and `call_patcher` does it for one direct call.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn

from . import forge_chroma, forge_flux, neo_flux, reforge_flux

CONTEXT_DIM = 24
TEXT_TOKENS = 8
LATENT_CHANNELS = 16
NETWORKS = {
    "forge": forge_flux.IntegratedFluxTransformer2DModel,
    "neo": neo_flux.IntegratedFluxTransformer2DModel,
    "forge-chroma": forge_chroma.IntegratedChromaTransformer2DModel,
    "reforge": reforge_flux.Flux,
}


def make_network(kind: str = "forge", seed: int = 0, **kwargs: Any) -> nn.Module:
    """A small random stand-in network: Flux of Forge main ("forge"), Forge Neo ("neo") or reForge ("reforge"),
    or Forge main's Chroma ("forge-chroma")."""
    torch.manual_seed(seed)
    return NETWORKS[kind](context_dim=CONTEXT_DIM, **kwargs).eval()


def text_conditioning(prompts: list[str]) -> torch.Tensor:
    """A deterministic stand-in for T5: (len(prompts), TEXT_TOKENS, CONTEXT_DIM), seeded by each prompt."""
    rows = []
    for prompt in prompts:
        gen = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        rows.append(torch.randn(TEXT_TOKENS, CONTEXT_DIM, generator=gen))
    return torch.stack(rows)


class FluxKModel(nn.Module):
    """backend/modules/k_model.py around a Flux network (eps-style scaling, enough for the stand-in sampler)."""

    def __init__(self, diffusion_model: nn.Module, predictor: Any) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.predictor = predictor

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kwargs) -> torch.Tensor:
        """Forge's `KModel.apply_model(x, t, c_crossattn=..., transformer_options=..., **conds)`."""
        sigma = t.view(-1, 1, 1, 1)
        x_in = x / (sigma**2 + 1) ** 0.5
        timestep = self.predictor.timestep(t) / 1000.0
        out = self.diffusion_model(
            x_in, timestep, context=c_crossattn, transformer_options=transformer_options or {}, **kwargs
        )
        return x - out * sigma


def call_patcher(patcher: Any, x: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
    """One model call as Forge's sampling function makes it: through `model_function_wrapper` when set."""
    model = patcher.model
    wrapper = patcher.model_options.get("model_function_wrapper")
    if wrapper is None:
        return model.apply_model(x, t, **c)
    args = {"input": x, "timestep": t, "c": c, "cond_or_uncond": [0]}
    return wrapper(model.apply_model, args)


class FluxForgeModel:
    """`shared.sd_model` for a Flux checkpoint on Forge main ("forge") or Forge Neo ("neo")."""

    def __init__(self, network: nn.Module, flavour: str = "forge") -> None:
        import stub_models

        flags = ("is_sd1", "is_sdxl") if flavour == "neo" else ("is_sd1", "is_sd2", "is_sdxl", "is_sd3")
        for flag in flags:
            setattr(self, flag, False)
        self.latent_channels = LATENT_CHANNELS
        self.schedule = stub_models.DiscreteSchedule()
        patcher = stub_models.UnetPatcher(FluxKModel(network, stub_models.Predictor(self.schedule)), flavour)
        self.forge_objects = stub_models.ForgeObjects(patcher)
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.stub_forge_flavour = flavour

    def get_learned_conditioning(self, prompts: list[str]) -> torch.Tensor:
        return text_conditioning(list(prompts))


def make_flux_model(flavour: str = "forge", seed: int = 0, network: nn.Module | None = None, **kwargs: Any):
    """`shared.sd_model` of a Flux checkpoint on Forge main or Neo (`network`: another network in its place)."""
    return FluxForgeModel(network if network is not None else make_network(flavour, seed, **kwargs), flavour)
