"""Forge, reForge and Forge Neo UNets: ToDo as an attn1 patch on the UNet patcher.

Forge runs `attn1_patch` functions on the normalised hidden states before the k/v projections, as
`n, context, value = patch(n, context, value, extra_options)`; returning downsampled `context` and
`value` is ToDo. Forge resets patches before every sampling pass, so the host patches a clone per pass.
Forge's and reForge's `clone()` deep-copy the model options and with them this patch: a copy of the patch
is the patch itself, so a clone made later by another extension still steers and reports through our state.
"""

from __future__ import annotations

from typing import Any

import torch

from ..downsample import downsample_kv
from ..layout import layout_of
from ..plan import TodoPlan
from ..settings import TodoSettings
from ..state import CLOSED_WINDOW, NO_GRID, OWN_CONTEXT, WRAPPED, PassState


class ForgeAttn1Patch:
    """The attn1 patch. The level comes from the k/v token count: Forge's ToMe patch merges q only."""

    def __init__(self, state: PassState) -> None:
        self.state = state
        self.method = state.settings.method

    def __copy__(self) -> ForgeAttn1Patch:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ForgeAttn1Patch:
        return self

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict) -> tuple:
        state = self.state
        if not state.active:
            state.skip(CLOSED_WINDOW)
            return n, context, value
        # context is value only for self-attention; a bank or a cross context is not ours to touch.
        if context is None or context is not value:
            state.skip(OWN_CONTEXT)
            return n, context, value
        shape = extra_options.get("original_shape")
        if context.dim() != 3 or shape is None or len(shape) < 4:
            state.skip(NO_GRID)
            return n, context, value
        if context.shape[0] != shape[0]:  # tiles in the batch (an attn1 patch before ours, e.g. HyperTile)
            state.skip(WRAPPED)
            return n, context, value
        state.latent_hw = (int(shape[-2]), int(shape[-1]))
        target = state.target(context.shape[1], state.latent_hw)
        if target is None:
            return n, context, value
        kv = downsample_kv(context, target.h, target.w, target.factor, self.method)
        return n, kv, kv


def patch_unet_patcher(patcher: Any, settings: TodoSettings, native_px: int | None = None) -> tuple[Any, PassState]:
    """A clone of Forge's UNet patcher with ToDo's attn1 patch, and the state to steer it.

    The caller assigns the clone back (`p.sd_model.forge_objects.unet = clone`); the original is untouched.
    """
    state = PassState(TodoPlan(settings, layout_of(patcher.model.diffusion_model, native_px)))
    clone = patcher.clone()
    if not settings.is_off:
        clone.set_model_attn1_patch(ForgeAttn1Patch(state))
    return clone, state
