"""Fake `shared.sd_model` objects around a real (small, random) ldm UNet, for A1111 and for Forge.

Only what the extension and the stand-in sampler read is modelled.

A1111 (ldm `LatentDiffusion` as loaded by A1111): `sd_model.model` is the `DiffusionWrapper` whose
`diffusion_model` is the ldm `UNetModel`; the model flags `is_sd1/is_sd2/is_sdxl/is_ssd/is_sd3`
(sd_models.py `set_model_type`) and `parameterization`.

Forge (backend/diffusion_engine/base.py, backend/patcher/{base,unet}.py, backend/modules/k_model.py):
`sd_model.forge_objects.unet` is a `UnetPatcher` whose `model` (KModel) has the UNet as `diffusion_model`
and a `predictor` (sigma -> timestep); `clone()` deep-copies `model_options` as Forge and reForge do (so a
patch object installed before a later clone is a copy in the clone), Neo's rebuilds only dicts and lists;
`set_model_attn1_patch`, `set_model_attn1_output_patch`, `set_transformer_option` and
`set_model_unet_function_wrapper` write `model_options` as Forge does; `forge_objects_after_applying_lora` is what
processing resets `forge_objects` to before every sampling pass. There is no `sd_model.model` in current
Forge (`legacy=True` adds it, as old Forge / reForge have it).

Forge runs `attn1_patch` functions inside its `BasicTransformerBlock`; the ldm block here has no such
code, so `run_forge_unet` adds, for the duration of one UNet call, a pre-hook on each ldm `attn1` that
runs the patch chain on the normalised hidden states `n` with `context = value = n` and the Forge
`extra_options`, then calls attn1 with `context=<patched context>` (ldm's attention takes k and v from
`context`, so a patch must return the same tensor for context and value).
"""

from __future__ import annotations

import copy
import zlib
from types import SimpleNamespace
from typing import Any

import torch
from ldm.modules.attention import SpatialTransformer
from torch import nn

from lib_todo.bench import unets

ARCHS = {"sd15": ("ldm-sd15", "is_sd1"), "sd2": ("ldm-sd15", "is_sd2"), "sdxl": ("ldm-sdxl", "is_sdxl")}
TOKENS = 77


class DiscreteSchedule:
    """The SD1/SD2/SDXL noise schedule (scaled-linear betas 0.00085..0.012, 1000 steps) in k-diffusion terms."""

    def __init__(self) -> None:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.float().log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        high = low + 1
        w = ((self.log_sigmas[low] - log_sigma) / (self.log_sigmas[low] - self.log_sigmas[high])).clamp(0, 1)
        return ((1 - w) * low + w * high).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """n sigmas evenly spaced in timestep (the "Automatic" schedule of the Euler sampler), then 0."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])


def text_conditioning(prompts: list[str], context_dim: int) -> torch.Tensor:
    """A deterministic stand-in for CLIP: one (77, context_dim) tensor per prompt, seeded by its text."""
    rows = []
    for prompt in prompts:
        gen = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        rows.append(torch.randn(TOKENS, context_dim, generator=gen))
    return torch.stack(rows)


class _ModelBase:
    """What A1111 and Forge models share here: flags, schedule, text conditioning."""

    def _init_common(self, arch: str, unet: nn.Module) -> None:
        self.arch = arch
        flag = ARCHS[arch][1]
        for name in ("is_sd1", "is_sd2", "is_sdxl", "is_ssd", "is_sd3"):
            setattr(self, name, name == flag)
        self.parameterization = "eps"
        self.schedule = DiscreteSchedule()
        self.context_dim = unets.context_dim_of(unet)

    def get_learned_conditioning(self, prompts: list[str]) -> torch.Tensor:
        return text_conditioning(list(prompts), self.context_dim)


class DiffusionWrapper(nn.Module):
    def __init__(self, diffusion_model: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c_concat: list | None = None, c_crossattn: list | None = None, c_adm=None):
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class A1111Model(_ModelBase, nn.Module):
    """`shared.sd_model` on A1111: the ldm LatentDiffusion surface the webui and extensions use."""

    def __init__(self, arch: str, unet: nn.Module) -> None:
        nn.Module.__init__(self)
        self.model = DiffusionWrapper(unet)
        self._init_common(arch, unet)

    def apply_model(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.model(x_noisy, t, **cond)


def make_a1111_model(arch: str = "sd15", width: int = 32, seed: int = 0) -> A1111Model:
    return A1111Model(arch, unets.build(ARCHS[arch][0], width=width, seed=seed))


# Forge


class Predictor(nn.Module):
    """backend/modules/k_prediction.py (eps prediction), the part used here: sigma -> timestep."""

    def __init__(self, schedule: DiscreteSchedule) -> None:
        super().__init__()
        self.schedule = schedule

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.schedule.sigma_to_t(sigma)


class KModel(nn.Module):
    def __init__(self, diffusion_model: nn.Module, schedule: DiscreteSchedule) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.predictor = Predictor(schedule)

    def apply_model(self, x, sigma, c_crossattn, transformer_options) -> torch.Tensor:
        x_in = x / (sigma.view(-1, 1, 1, 1) ** 2 + 1) ** 0.5
        eps = run_forge_unet(
            self.diffusion_model, x_in, self.predictor.timestep(sigma), c_crossattn, transformer_options
        )
        return x - eps * sigma.view(-1, 1, 1, 1)


class UnetPatcher:
    """backend/patcher/unet.py `UnetPatcher` (the patch-registry part of ModelPatcher)."""

    def __init__(self, model: KModel, flavour: str = "forge") -> None:
        self.model = model
        self.flavour = flavour
        self.model_options: dict[str, Any] = {"transformer_options": {}}

    def clone(self) -> UnetPatcher:
        """Forge and reForge deep-copy the model options, patches included; Neo rebuilds dicts and lists only."""
        n = UnetPatcher(self.model, self.flavour)
        if self.flavour == "neo":
            n.model_options = _containers_copied(self.model_options)
        else:
            n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_patch(self, patch: Any, name: str) -> None:
        to = self.model_options["transformer_options"]
        if "patches" not in to:
            to["patches"] = {}
        to["patches"][name] = to["patches"].get(name, []) + [patch]

    def set_model_attn1_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn1_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_transformer_option(self, k: str, v: Any) -> None:
        self.model_options.setdefault("transformer_options", {})[k] = v

    def set_model_unet_function_wrapper(self, wrapper: Any) -> None:
        self.model_options["model_function_wrapper"] = wrapper


def _containers_copied(value: Any) -> Any:
    """Dicts and lists copied all the way down, everything else shared (Forge Neo's clone)."""
    if isinstance(value, dict):
        return {k: _containers_copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_containers_copied(v) for v in value]
    return value


class ForgeObjects:
    """backend/diffusion_engine/base.py `ForgeObjects`; only the UNet patcher is modelled (no clip, vae)."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def shallow_copy(self) -> ForgeObjects:
        return ForgeObjects(self.unet)


class ForgeModel(_ModelBase):
    """`shared.sd_model` on Forge (`ForgeDiffusionEngine`; not an nn.Module)."""

    def __init__(self, arch: str, unet: nn.Module, flavour: str = "forge", legacy: bool = False) -> None:
        self._init_common(arch, unet)
        patcher = UnetPatcher(KModel(unet, self.schedule), flavour)
        self.forge_objects = ForgeObjects(patcher)
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        # "forge" (current), "reforge" or "neo": how the hires pass resets and how the patcher clones
        self.stub_forge_flavour = flavour
        if legacy:
            self.model = SimpleNamespace(diffusion_model=unet)


def make_forge_model(arch: str = "sd15", width: int = 32, seed: int = 0, flavour: str = "forge", legacy=False):
    return ForgeModel(arch, unets.build(ARCHS[arch][0], width=width, seed=seed), flavour, legacy)


# Forge's transformer patches on the ldm UNet


def attn1_positions(unet: nn.Module) -> dict[nn.Module, tuple[tuple[str, int], int, int]]:
    """attn1 -> (Forge "block", "block_index", "transformer_index"), in UNet forward order."""
    positions = {}
    transformer_index = 0
    blocks = [(("input", i), m) for i, m in enumerate(unet.input_blocks)]
    blocks += [(("middle", 0), unet.middle_block)] + [(("output", i), m) for i, m in enumerate(unet.output_blocks)]
    for block, module in blocks:
        for layer in module:
            if isinstance(layer, SpatialTransformer):
                for block_index, tb in enumerate(layer.transformer_blocks):
                    positions[tb.attn1] = (block, block_index, transformer_index)
                transformer_index += 1
    return positions


SUPPORTED_PATCHES = {"attn1_patch", "attn1_output_patch"}


def run_forge_unet(unet: nn.Module, x, timesteps, context, transformer_options: dict) -> torch.Tensor:
    """One Forge UNet call: `transformer_options` as Forge's UNet fills it, attn1 patches on the ldm blocks."""
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    patches = transformer_options.get("patches", {})
    unsupported = set(patches) - SUPPORTED_PATCHES
    if unsupported or transformer_options.get("patches_replace"):
        raise NotImplementedError(f"the stand-in runs only {sorted(SUPPORTED_PATCHES)}, not {sorted(unsupported)}")

    def extra_options_for(attn: nn.Module) -> dict:
        block, block_index, transformer_index = positions[attn]
        transformer_options.update(block=block, block_index=block_index, transformer_index=transformer_index)
        extra = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"] = attn.heads
        extra["dim_head"] = attn.to_q.out_features // attn.heads
        return extra

    def before_attn1(attn, args, kwargs):
        assert kwargs.get("context") is None, "ldm passes no context to a self-attention attn1"
        n = args[0]
        ctx = value = n
        extra = extra_options_for(attn)
        for patch in patches.get("attn1_patch", []):
            n, ctx, value = patch(n, ctx, value, extra)
        assert value is ctx, "ldm attention takes k and v from one context: a patch returned value != context"
        return (n,), {**kwargs, "context": ctx}

    def after_attn1(attn, args, kwargs, out):
        extra = extra_options_for(attn)
        for patch in patches.get("attn1_output_patch", []):
            out = patch(out, extra)
        return out

    positions = attn1_positions(unet)
    handles = []
    try:
        for attn in positions if patches else ():
            if "attn1_patch" in patches:
                handles.append(attn.register_forward_pre_hook(before_attn1, with_kwargs=True, prepend=True))
            if "attn1_output_patch" in patches:
                handles.append(attn.register_forward_hook(after_attn1, with_kwargs=True))
        with unets.a1111_skip_resize():
            return unet(x, timesteps, context=context)
    finally:
        for handle in handles:
            handle.remove()
