"""Forge and Forge Neo Flux-family DiTs (Flux.1, Chroma): ToDo inside the model's joint attention.

How these hosts attend: the double and single blocks call a module-level `attention(q, k, v, pe, ...)`, which
applies RoPE to q and k and calls the module-level `attention_function(q, k, v, heads, skip_reshape=True, ...)`
with (B, heads, L, D) tensors and gets (B, L, heads*D) back. Forge main's Chroma imports Flux's `attention`
by name, and Neo's Chroma reuses Flux's blocks, so every host resolves `attention_function` in the globals of
the function its blocks call; that is the one name ToDo replaces, and only while one model call runs.
reForge runs ComfyUI's Flux code, whose `attention(q, k, v, pe)` calls `optimized_attention` the same way.

Per pass, the host patches a clone of the UNet patcher with a UNet function wrapper (Forge's
`model_function_wrapper`). Per model call the wrapper reads the text length (`c_crossattn`) and the latent
size, puts ToDo's attention in place of `attention_function`, runs the call, and puts the original back
(the same object), also when the call raises. Single blocks do not know the text length; the call does.

Token order: Forge main concatenates text first everywhere. Neo's double blocks put the image first when
the block's `flipped_img_txt` is set; Neo passes `transformer_options` (block type and index) to
`attention_function`, so the order is read from that block. A sequence whose length is not text + image
grid (Kontext reference images) or that comes with a mask is left to the original attention.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..grid import level_grid
from ..joint_attention import joint_attention
from ..layout import AttentionLayout, dit_layout
from ..plan import TodoPlan
from ..settings import TodoSettings
from ..state import CLOSED_WINDOW, EXTRA_TOKENS, NO_GRID, NOT_ASKED, OWN_CONTEXT, PassState

FLUX_NATIVE_PX = 1024
ATTENTION = "attention"
# What the module-level attention() calls: Forge main and Neo import `attention_function`; reForge (ComfyUI's
# flux code in ldm_patched) imports `optimized_attention`, with the same calling convention.
ATTENTION_FUNCTIONS = ("attention_function", "optimized_attention")
TOKEN_PX = 16  # pixels per image token: Flux.1 patchifies a /8 latent 2x2, Flux.2 a /16 latent 1x1


@dataclass(frozen=True)
class FluxHost:
    """A Flux-family model ToDo can serve, and where its attention looks up `attention_function`.

    slots: (module globals, name) of the attention function the blocks' `attention` calls, one per distinct
    module. patch: the model's patch size (2 for Flux.1 and Chroma). flipped: per double block, whether it
    puts the image tokens first (Neo's `flipped_img_txt`).
    """

    model: nn.Module
    slots: tuple[tuple[dict[str, Any], str], ...]
    patch: int
    flipped: tuple[bool, ...]

    def image_first(self, transformer_options: Any) -> bool | None:
        """Whether the attention call now running puts the image tokens first; None when it cannot be told."""
        flipped = self.flipped
        if not any(flipped):
            return False
        options = transformer_options if isinstance(transformer_options, dict) else {}
        index = options.get("block_index")
        if options.get("block_type") == "single":
            return False
        if options.get("block_type") == "double" and isinstance(index, int) and 0 <= index < len(flipped):
            return flipped[index]
        return None


def flux_host(model: Any) -> FluxHost:
    """The host description of a Forge / Neo Flux-family model; TypeError naming what is missing otherwise."""
    name = type(model).__name__
    doubles = getattr(model, "double_blocks", None)
    singles = getattr(model, "single_blocks", None)
    if not isinstance(doubles, nn.ModuleList) or not isinstance(singles, nn.ModuleList) or not len(doubles):
        raise TypeError(f"{name} is not a Flux-family DiT (no double and single blocks)")
    slots: dict[int, tuple[dict[str, Any], str]] = {}
    for block in [*doubles, *singles]:
        found = _attention_slot(block)
        if found is None:
            raise TypeError(
                f"the blocks of {name} ({type(block).__name__}) do not call a module-level attention() "
                "that calls attention_function or optimized_attention, as Flux does"
            )
        slots[id(found[0])] = found
    patch = getattr(model, "patch_size", 2)
    if patch not in (1, 2):
        raise TypeError(f"{name} patchifies {patch}x{patch}; ToDo knows Flux's 2x2 (and 1x1 of Flux.2)")
    flipped = tuple(bool(getattr(block, "flipped_img_txt", False)) for block in doubles)
    return FluxHost(model, tuple(slots.values()), int(patch), flipped)


def unsupported_reason(model: Any) -> str | None:
    """Why ToDo cannot serve this diffusion model as a Flux-family DiT, or None when it can."""
    try:
        flux_host(model)
    except TypeError as err:
        return str(err)
    return None


def flux_layout(patch: int, native_px: int | None = None) -> AttentionLayout:
    """One level: the image tokens on the latent patchified `patch x patch`; native size 1024 px by default."""
    native = native_px or FLUX_NATIVE_PX
    layout = dit_layout(native, patch)
    if patch == 2:
        return layout
    return AttentionLayout(layout.attention_ds, native * patch // TOKEN_PX, "dit")


def _attention_slot(block: nn.Module) -> tuple[dict[str, Any], str] | None:
    """(globals, name) of the attention function this block's `attention` calls, or None if it calls none."""
    forward = getattr(type(block), "forward", None)
    block_globals = getattr(forward, "__globals__", None)
    if block_globals is None:
        module = sys.modules.get(type(block).__module__)
        block_globals = vars(module) if module is not None else {}
    found = getattr(block_globals.get(ATTENTION), "__globals__", None)
    for name in ATTENTION_FUNCTIONS if found is not None else ():
        if callable(found.get(name)):
            return found, name
    return None


@dataclass(frozen=True)
class FluxCall:
    """One model call: text tokens, the image token grid, and the latent size it came from."""

    txt_len: int
    grid_hw: tuple[int, int]
    latent_hw: tuple[int, int]


class TodoFluxAttention:
    """Stands in for the host's `attention_function` during one model call; what ToDo leaves alone goes to
    the original with the arguments untouched."""

    def __init__(self, state: PassState, host: FluxHost, call: FluxCall, original: Callable[..., Any]) -> None:
        self.state = state
        self.host = host
        self.call = call
        self.original = original

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = self._downsampled(q, k, v, args, kwargs)
        return self.original(q, k, v, *args, **kwargs) if out is None else out

    def _downsampled(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        """ToDo's output, (B, L, heads*D) or (B, heads, L, D) as asked, or None to leave the call alone."""
        state, call = self.state, self.call
        mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
        if mask is not None or not kwargs.get("skip_reshape", False) or q.dim() != 4:
            state.skip(OWN_CONTEXT)
            return None
        n_img = call.grid_hw[0] * call.grid_hw[1]
        if q.shape[2] != call.txt_len + n_img or k.shape[2] != q.shape[2]:
            state.skip(EXTRA_TOKENS)
            return None
        image_first = self.host.image_first(kwargs.get("transformer_options"))
        if image_first is None:
            state.skip(NO_GRID)
            return None
        target = state.target(n_img, call.latent_hw)
        if target is None:
            return None
        out = joint_attention(
            q, k, v, call.txt_len, (target.h, target.w), target.factor, state.settings.method, image_first=image_first
        )
        if kwargs.get("skip_output_reshape", False):
            return out
        b, heads, length, d = out.shape
        return out.transpose(1, 2).reshape(b, length, heads * d)


class FluxCallWrapper:
    """Forge's UNet function wrapper `(apply_model, args) -> output`, installing ToDo for one call at a time.

    `previous` is a wrapper another extension had set on the patcher (MultiDiffusion, say); it still runs, and
    each model call it makes gets ToDo for its own input size. A copy of the wrapper (Forge's clone deep-copies
    model options) is the wrapper itself, so it steers one state.
    """

    def __init__(self, state: PassState, host: FluxHost, previous: Callable[..., Any] | None = None) -> None:
        self.state = state
        self.host = host
        self.previous = previous.previous if isinstance(previous, FluxCallWrapper) else previous

    def __copy__(self) -> FluxCallWrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FluxCallWrapper:
        return self

    def __call__(self, apply_model: Callable[..., torch.Tensor], args: dict[str, Any]) -> torch.Tensor:
        def apply_with_todo(x: torch.Tensor, t: torch.Tensor, **c: Any) -> torch.Tensor:
            call = self._call_of(x, c.get("c_crossattn"))
            if call is None:
                return apply_model(x, t, **c)
            with attention_replaced(
                self.host, lambda original: TodoFluxAttention(self.state, self.host, call, original)
            ):
                return apply_model(x, t, **c)

        if self.previous is not None:  # e.g. MultiDiffusion: each tile reaches ToDo as a call of its own size
            return self.previous(apply_with_todo, args)
        return apply_with_todo(args["input"], args["timestep"], **args["c"])

    def _call_of(self, x: Any, context: Any) -> FluxCall | None:
        """What this model call holds, or None (counted in the state) when ToDo sits it out."""
        state = self.state
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not isinstance(context, torch.Tensor):
            state.skip(NO_GRID)
            return None
        state.latent_hw = (int(x.shape[-2]), int(x.shape[-1]))
        if not state.active:
            state.skip(CLOSED_WINDOW)
            return None
        if not state.plan.acts_at(state.latent_hw):
            state.skip(NOT_ASKED)
            return None
        grid = level_grid(state.latent_hw, self.host.patch)
        return FluxCall(int(context.shape[1]), grid, state.latent_hw)


# Slots holding ToDo's attention right now, with what they held before: normally empty between model calls.
_REPLACED: dict[tuple[int, str], tuple[dict[str, Any], str, Any]] = {}


@contextmanager
def attention_replaced(host: FluxHost, make: Callable[[Any], Any]) -> Iterator[None]:
    """The attention function in each of the host's slots replaced by `make(original)`, then restored."""
    done = []
    try:
        for namespace, name in host.slots:
            original = namespace[name]
            _REPLACED.setdefault((id(namespace), name), (namespace, name, original))
            namespace[name] = make(original)
            done.append((namespace, name, original))
        yield
    finally:
        for namespace, name, original in reversed(done):
            namespace[name] = original
            if _REPLACED.get((id(namespace), name), (None, None, None))[2] is original:
                del _REPLACED[(id(namespace), name)]


def restore_all() -> int:
    """Defensive (model switch, UI reload): put back any attention function still replaced; returns how many."""
    for namespace, name, original in _REPLACED.values():
        namespace[name] = original
    count = len(_REPLACED)
    _REPLACED.clear()
    return count


def installed_anywhere() -> bool:
    """Whether some slot holds ToDo's attention now (only ever true inside a model call)."""
    return bool(_REPLACED)


def patch_flux_patcher(patcher: Any, settings: TodoSettings, native_px: int | None = None) -> tuple[Any, PassState]:
    """A clone of Forge's / Neo's UNet patcher of a Flux-family model with ToDo's wrapper, and its state.

    The caller assigns the clone back (`p.sd_model.forge_objects.unet = clone`); the original is untouched.
    With factor 1 (a DiT's only level) the clone carries nothing of ToDo. TypeError when the model is not one
    ToDo serves.
    """
    host = flux_host(patcher.model.diffusion_model)
    state = PassState(TodoPlan(settings, flux_layout(host.patch, native_px)))
    clone = patcher.clone()
    if not settings.is_off_for(len(state.plan.layout.level_ds)):
        previous = clone.model_options.get("model_function_wrapper")
        clone.set_model_unet_function_wrapper(FluxCallWrapper(state, host, previous))
    return clone, state
