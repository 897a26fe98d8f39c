"""The Anima family (circlestone-labs/Anima: a Cosmos-Predict2 DiT with an LLM adapter), and, on diffusers,
Cosmos' transformer it runs on.

Image-only self-attention over the latent's `frames x h x w` tokens (row-major: frame, row, column) after
split-half RoPE; the text reaches each block through a separate cross-attention, never touched. One token per
(1, 2, 2) patch of the Wan 2.1 VAE's /8 latent: 16 image pixels per token. Native 1024 px: diffusers' Anima
pipeline (`AnimaModularPipeline`) defaults to `default_sample_size` 128 latents x `vae_scale_factor` 8; Neo gives
no size (its presets leave width/height at 0).

- Forge Neo (`FORGE`, backend/nn/anima.py `Anima`): each block's `self_attn` (`SelfCrossAttention` with
  `is_SelfAttn`) calls `attention_function(q, k, v, heads, skip_reshape=True, transformer_options)` with
  (B, heads, L, D) from its static `torch_attention_op`; `cross_attn` (the same class, to the text) is not scoped.
  Neo's Anima engine sets `is_wan`, so the latent is (B, C, T, H, W) (T = 1 for an image), padded up to the patch
  `(patch_temporal, patch_spatial, patch_spatial)` (Neo's detection: (1, 2, 2)). Reference latents (Neo's global
  `dynamic_args.ref_latents`, set when `anima_do_reference` is on) are concatenated along T after the target's
  frames: their tokens follow the target's and are kept whole.
- diffusers (`DISPATCH`): CosmosTransformer3DModel (Anima's pipeline, and Cosmos Predict 2 / 2.5 on the same
  class); the `attn1` of every block, whose processor `CosmosAttnProcessor2_0` calls `dispatch_attention_fn` with
  (B, L, heads, D), attends over exactly the video's tokens (no mask); `attn2` (cross-attention, the same
  processor class, or `CosmosAttnProcessor2_5` with an image context) is left alone. The grid is the latent
  `hidden_states` (B, C, T, H, W) over `config.patch_size` (the model requires the sides to divide). There is no
  Anima-specific diffusers transformer class: diffusers 0.42.1 runs Anima on CosmosTransformer3DModel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..joint_attention import ImageGrid
from .dit import (
    DISPATCH,
    FORGE,
    DitCall,
    DitFamily,
    Role,
    forward_arguments,
    image_only,
    image_then_rest,
    is_class_named,
)

NATIVE_PX = 1024
TOKEN_PX = 16  # a 2x2 spatial patch of a /8 latent
CLASS_NAME = "CosmosTransformer3DModel"
DIFFUSERS_PROCESSORS = ("CosmosAttnProcessor2_0",)


def _blocks(network: Any, name: str) -> list[nn.Module]:
    blocks = getattr(network, name, None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


# Forge Neo


def is_forge_anima(network: Any) -> bool:
    """Neo's Anima network: spatial and temporal patch sizes, `blocks` with a self-attention (`is_SelfAttn`) and a
    cross-attention each."""
    blocks = _blocks(network, "blocks")
    if not blocks or not all(isinstance(getattr(network, n, None), int) for n in ("patch_spatial", "patch_temporal")):
        return False
    attn = getattr(blocks[0], "self_attn", None)
    return getattr(attn, "is_SelfAttn", False) is True and hasattr(blocks[0], "cross_attn")


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `self_attn` of every block: [target frames, reference frames]."""
    attns = [getattr(block, "self_attn", None) for block in _blocks(network, "blocks")]
    return [(a, image_then_rest) for a in attns if getattr(a, "is_SelfAttn", False) is True]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The target's token grid: the latent (B, C, T, H, W) over the patch, each side rounded up (the model pads);
    references are appended inside the model, after it."""
    spatial, temporal = getattr(network, "patch_spatial", None), getattr(network, "patch_temporal", None)
    if x.dim() != 5 or not isinstance(spatial, int) or not isinstance(temporal, int) or min(spatial, temporal) < 1:
        return None
    t, h, w = (int(x.shape[i]) for i in (2, 3, 4))
    return DitCall(ImageGrid(-(-t // temporal), -(-h // spatial), -(-w // spatial)))


FORGE_ANIMA = DitFamily(
    name="Anima",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_anima,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
)


# diffusers


def is_diffusers_cosmos(network: Any) -> bool:
    return is_class_named(network, CLASS_NAME)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn1` (self-attention) of every block whose processor is the plain one."""
    attns = [getattr(block, "attn1", None) for block in _blocks(network, "transformer_blocks")]
    return [(a, image_only) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """forward(hidden_states, timestep, encoder_hidden_states, ...): the grid of `hidden_states` (B, C, T, H, W)
    over `config.patch_size` (pt, ph, pw)."""
    hidden = forward_arguments(network, args, kwargs).get("hidden_states")
    patch = tuple(getattr(getattr(network, "config", None), "patch_size", ()) or ())
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 5 or len(patch) != 3 or min(patch) < 1:
        return None
    sides = [int(hidden.shape[i]) for i in (2, 3, 4)]
    if any(side % p for side, p in zip(sides, patch, strict=True)):
        return None
    return DitCall(ImageGrid(*(side // p for side, p in zip(sides, patch, strict=True))))


DIFFUSERS_ANIMA = DitFamily(
    name="Anima",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_cosmos,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_ANIMA, DIFFUSERS_ANIMA)
