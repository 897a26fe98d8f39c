"""Forward pre-hooks that give `attn1` keys/values from downsampled hidden states.

Used for A1111's `ldm`/`sgm` UNets and for diffusers' UNet2DConditionModel. A pre-hook runs in
`Module.__call__`, before whichever `forward` an attention optimizer swapped into the class, so ToDo
composes with sdp, xformers, sub-quadratic, Doggettx, InvokeAI and V1 alike. Every attention class there
computes `k, v` from `context` when one is given, so passing `context = downsample(x)` is ToDo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..downsample import downsample_kv
from ..state import CLOSED_WINDOW, NO_GRID, OWN_CONTEXT, WRAPPED, PassState

TAG = "_lib_todo_hook"


@dataclass(frozen=True)
class UnetFlavour:
    """How one UNet family names things: the latent argument of the UNet, the context kwarg of attention."""

    latent_arg: str
    context_kwarg: str


LDM = UnetFlavour(latent_arg="x", context_kwarg="context")
DIFFUSERS = UnetFlavour(latent_arg="sample", context_kwarg="encoder_hidden_states")


def self_attention_modules(unet: nn.Module) -> list[nn.Module]:
    """The `attn1` of every BasicTransformerBlock (ldm, sgm and diffusers share the name).

    Subclasses count: tomesd swaps each block's class for its `ToMeBlock` subclass.
    """
    return [
        m.attn1
        for m in unet.modules()
        if any(c.__name__ == "BasicTransformerBlock" for c in type(m).__mro__)
        and isinstance(getattr(m, "attn1", None), nn.Module)
    ]


def install(unet: nn.Module, state: PassState, flavour: UnetFlavour) -> list[Any]:
    """Register the latent-size hook on `unet` and the ToDo hook on each attn1; returns the torch handles."""
    handles = [unet.register_forward_pre_hook(_tagged(_latent_hook(state, flavour)), with_kwargs=True)]
    hook = _tagged(_attn1_hook(state, flavour))
    for attn in self_attention_modules(unet):
        handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def remove_tagged(unet: nn.Module) -> int:
    """Remove every hook lib_todo installed anywhere in `unet`, even ones whose handle was lost."""
    removed = 0
    for module in unet.modules():
        for key, fn in list(module._forward_pre_hooks.items()):
            if getattr(fn, TAG, False):
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                removed += 1
    return removed


def has_hooks(unet: nn.Module) -> bool:
    """Whether any lib_todo hook is installed in `unet`."""
    return any(getattr(fn, TAG, False) for m in unet.modules() for fn in m._forward_pre_hooks.values())


def _tagged(fn: Callable) -> Callable:
    setattr(fn, TAG, True)
    return fn


def _latent_hook(state: PassState, flavour: UnetFlavour) -> Callable:
    def record_latent(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get(flavour.latent_arg)
        # The size of this call: tiles, hires and inpaint-only-masked all differ from the UI size.
        state.latent_hw = (int(x.shape[-2]), int(x.shape[-1])) if isinstance(x, torch.Tensor) and x.dim() == 4 else None

    return record_latent


def _attn1_hook(state: PassState, flavour: UnetFlavour) -> Callable:
    name = flavour.context_kwarg
    method = state.settings.method

    def downsample_context(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not state.active:
            state.skip(CLOSED_WINDOW)
            return None
        if not args or len(args) > 1 or kwargs.get(name) is not None:
            state.skip(OWN_CONTEXT)  # a caller that brings its own context (a bank, a reference) keeps it
            return None
        if kwargs.get("attention_mask") is not None or kwargs.get("mask") is not None:
            state.skip(OWN_CONTEXT)  # a mask is sized for the full token count
            return None
        if "forward" in module.__dict__:
            state.skip(WRAPPED)  # an instance wrapper (HyperTile) reshapes x after us; the context would not fit
            return None
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            state.skip(NO_GRID)
            return None
        target = state.target(x.shape[1], state.latent_hw)
        if target is None:
            return None
        kwargs[name] = downsample_kv(x, target.h, target.w, target.factor, method)
        return args, kwargs

    return downsample_context
