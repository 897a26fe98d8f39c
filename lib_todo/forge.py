"""Forge (current `backend/`, old Forge and reForge `ldm_patched`): ToDo as an attn1 patch.

Forge runs `attn1_patch` functions on the normalised hidden states before the k/v projections, as
`n, context, value = patch(n, context, value, extra_options)`; returning downsampled `context` and
`value` is ToDo. Forge resets patches before every sampling pass, so the script patches a clone per pass.
"""

from __future__ import annotations

from typing import Any

import torch

from .downsample import downsample_kv
from .layout import layout_of
from .plan import TodoState
from .settings import TodoSettings


class ForgeAttn1Patch:
    """The attn1 patch. The level comes from the k/v token count: Forge's ToMe patch merges q only."""

    def __init__(self, state: TodoState) -> None:
        self.state = state
        self.method = state.settings.method

    def __call__(self, n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra_options: dict) -> tuple:
        state = self.state
        # context is value only for self-attention; a bank or a cross context is not ours to touch.
        if not state.active or context is None or context is not value or context.dim() != 3:
            return n, context, value
        shape = extra_options.get("original_shape")
        if shape is None or len(shape) < 4:
            return n, context, value
        target = state.target(context.shape[1], (int(shape[-2]), int(shape[-1])))
        if target is None:
            return n, context, value
        h, w, factor = target
        kv = downsample_kv(context, h, w, factor, self.method)
        return n, kv, kv


def patch_unet_patcher(patcher: Any, settings: TodoSettings, native_px: int | None = None) -> tuple[Any, TodoState]:
    """A clone of Forge's UNet patcher with ToDo's attn1 patch, and the state to steer it.

    The caller assigns the clone back (`p.sd_model.forge_objects.unet = clone`); the original is untouched.
    """
    state = TodoState(settings, layout_of(patcher.model.diffusion_model, native_px))
    clone = patcher.clone()
    if not settings.is_off:
        clone.set_model_attn1_patch(ForgeAttn1Patch(state))
    return clone, state
