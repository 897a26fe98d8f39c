"""The public API: apply ToDo to a UNet, remove it, or use it for a block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from . import backends
from .backends import dit_diffusers, unet_hooks
from .backends.dit import BALANCES, DitFamily
from .layout import is_diffusers_unet, layout_of
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


def apply(
    model: Any, settings: TodoSettings | None = None, *, native_px: int | None = None, balance: str = "channel"
) -> TodoHandle:
    """Install ToDo on a UNet (ldm/sgm UNetModel, diffusers UNet2DConditionModel) or a DiT transformer of a
    family ToDo serves (diffusers' Flux, Chroma, Flux.2, ...; `backends.DIT_FAMILIES`).

    `model` may also be what holds it: a diffusers pipeline (`.unet`, or `.transformer` and, for Wan 2.2's two
    experts, `.transformer_2`) or an A1111 model (`.model.diffusion_model`). Re-applying replaces what was there.
    With the factors at 1 nothing is installed at all. `native_px` is the model's training size (default: the
    family's, or 512 / 1024 for SD / SDXL-like UNets). `balance` (DiTs): "channel" (the bias rides in an extra
    head channel through the host's kernel), "mask" (an SDPA float mask) or "off".
    """
    networks = networks_of(model)
    settings = settings or TodoSettings()
    remove(model)
    family = backends.dit_family(networks[0], "diffusers")
    if family is not None:
        return _apply_dit(networks, family, settings, native_px, balance)
    unet = networks[0]
    state = PassState(TodoPlan(settings, layout_of(unet, native_px)))
    if settings.is_off or not state.plan.layout.attention_ds:
        return TodoHandle(unet, state, [])
    flavour = unet_hooks.DIFFUSERS if is_diffusers_unet(unet) else unet_hooks.LDM
    return TodoHandle(unet, state, unet_hooks.install(unet, state, flavour))


def remove(model: Any) -> int:
    """Remove whatever lib_todo installed on a UNet or DiT (or what holds them); returns how many hooks went."""
    return sum(dit_diffusers.remove_installed(n) + unet_hooks.remove_tagged(n) for n in networks_of(model))


def networks_of(model: Any) -> list[nn.Module]:
    """The denoising networks of `model`: itself, a diffusers pipeline's `.unet` or `.transformer` (and
    `.transformer_2`), or an A1111 model's `.model.diffusion_model`."""
    if isinstance(getattr(model, "unet", None), nn.Module):
        return [model.unet]
    found = [
        getattr(model, n) for n in ("transformer", "transformer_2") if isinstance(getattr(model, n, None), nn.Module)
    ]
    if found:
        return found
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    return [inner if isinstance(inner, nn.Module) else model]


def unet_of(model: Any) -> nn.Module:
    """The (first) denoising network of `model` (see `networks_of`)."""
    return networks_of(model)[0]


def _apply_dit(
    networks: list[nn.Module], family: DitFamily, settings: TodoSettings, native_px: int | None, balance: str
) -> TodoHandle:
    """A diffusers DiT (each expert of a pipeline, sharing one state): one joint-attention level."""
    if balance not in BALANCES:
        raise ValueError(f"ToDo balance: got {balance!r}; accepted: {', '.join(BALANCES)}")
    layout = family.layout(native_px)
    state = PassState(TodoPlan(settings, layout))
    if settings.is_off_for(len(layout.level_ds)):
        return TodoHandle(networks[0], state, [])
    handles = [
        h
        for n in networks
        for h in dit_diffusers.install(n, backends.dit_family(n, "diffusers") or family, state, balance)
    ]
    return TodoHandle(networks[0], state, handles)


@contextmanager
def patched(model: Any, settings: TodoSettings | None = None, **kwargs: Any) -> Iterator[TodoHandle]:
    """`with patched(unet, settings): ...` runs the block with ToDo and removes it, also on exceptions."""
    handle = apply(model, settings, **kwargs)
    try:
        yield handle
    finally:
        handle.remove()
