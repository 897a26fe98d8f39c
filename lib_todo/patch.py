"""The public API: apply ToDo to a UNet, remove it, or use it for a block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from .backends import flux_diffusers, unet_hooks
from .layout import dit_layout, is_diffusers_unet, layout_of
from .plan import TodoPlan
from .settings import TodoSettings
from .state import PassState


class TodoHandle:
    """ToDo installed on one UNet. `remove()` restores the model exactly; also a context manager."""

    def __init__(self, unet: nn.Module, state: PassState, torch_handles: list[Any]) -> None:
        self.unet = unet
        self.state = state
        self._torch_handles = torch_handles

    @property
    def settings(self) -> TodoSettings:
        return self.state.settings

    @property
    def applied(self) -> dict[int, float]:
        """Factors really applied so far, by level (1, 2); empty if ToDo never acted."""
        return dict(self.state.applied)

    @property
    def installed(self) -> bool:
        return bool(self._torch_handles)

    def set_progress(self, fraction: float) -> None:
        """Tell the step window how far sampling is (0 = first step, 1 = done)."""
        self.state.set_progress(fraction)

    def diffusers_callback(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        """For a diffusers pipeline's `callback_on_step_end`: moves the step window on after each step."""
        self.set_progress((step + 1) / max(1, int(getattr(pipe, "num_timesteps", 0) or 1)))
        return callback_kwargs

    def remove(self) -> None:
        for handle in self._torch_handles:
            handle.remove()
        self._torch_handles = []

    def __enter__(self) -> TodoHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply(model: Any, settings: TodoSettings | None = None, *, native_px: int | None = None) -> TodoHandle:
    """Install ToDo on an ldm/sgm UNetModel, a diffusers UNet2DConditionModel or FluxTransformer2DModel.

    `model` may also be what holds the UNet: a diffusers pipeline (`.unet`) or an A1111 model
    (`.model.diffusion_model`). Re-applying replaces what was there. With both factors at 1 nothing is
    installed at all. `native_px` is the model's training size (default: 512, or 1024 for SDXL-like layouts).
    """
    unet = unet_of(model)
    settings = settings or TodoSettings()
    if flux_diffusers.is_flux_transformer(unet):
        return _apply_flux(unet, settings, native_px)
    state = PassState(TodoPlan(settings, layout_of(unet, native_px)))
    remove(unet)
    if settings.is_off or not state.plan.layout.attention_ds:
        return TodoHandle(unet, state, [])
    flavour = unet_hooks.DIFFUSERS if is_diffusers_unet(unet) else unet_hooks.LDM
    return TodoHandle(unet, state, unet_hooks.install(unet, state, flavour))


def remove(model: Any) -> int:
    """Remove whatever lib_todo installed on a UNet (or what holds it); returns how many hooks went."""
    unet = unet_of(model)
    if flux_diffusers.is_flux_transformer(unet):
        return flux_diffusers.remove_installed(unet)
    return unet_hooks.remove_tagged(unet)


def unet_of(model: Any) -> nn.Module:
    """The UNet itself, given it or a diffusers pipeline (`.unet`, or `.transformer` for Flux) or an A1111 model
    (`.model.diffusion_model`)."""
    if isinstance(getattr(model, "unet", None), nn.Module):
        return model.unet
    if flux_diffusers.is_flux_transformer(getattr(model, "transformer", None)):
        return model.transformer
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    return inner if isinstance(inner, nn.Module) else model


def _apply_flux(transformer: nn.Module, settings: TodoSettings, native_px: int | None) -> TodoHandle:
    """diffusers' FluxTransformer2DModel: one joint-attention level; factor 1 installs nothing."""
    state = PassState(TodoPlan(settings, dit_layout(native_px or 1024)))
    flux_diffusers.remove_installed(transformer)
    if settings.is_off_for(len(state.plan.layout.level_ds)):
        return TodoHandle(transformer, state, [])
    return TodoHandle(transformer, state, flux_diffusers.install(transformer, state))


@contextmanager
def patched(model: Any, settings: TodoSettings | None = None, **kwargs: Any) -> Iterator[TodoHandle]:
    """`with patched(unet, settings): ...` runs the block with ToDo and removes it, also on exceptions."""
    handle = apply(model, settings, **kwargs)
    try:
        yield handle
    finally:
        handle.remove()
