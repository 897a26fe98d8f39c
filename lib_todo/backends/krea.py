"""The Krea 2 family (krea/Krea-2-Raw and its fine-tunes).

Single-stream joint attention over [text, image (, reference images)] in the main blocks, TEXT FIRST, after RoPE;
grouped-query heads repeated before the kernel call. The text-fusion transformer in front (per-token layerwise
blocks, then refiner blocks over the text) attends over text only and is never touched; reference tokens follow
the target image and are kept whole, as is the text. One token per 2x2 patch of the Wan 2.1 VAE's /8 latent:
16 image pixels per token. Native 1024 px: diffusers' `Krea2Pipeline.__call__` defaults to 1024 x 1024; Neo gives no
size (its presets leave width/height at 0).

- Forge Neo (`FORGE`, backend/nn/krea.py `SingleStreamDiT`): each main block's `attn` (`Attention.forward`, the
  same class as the text-fusion blocks', which are not scoped) calls `attention_function(q, k, v, heads, mask,
  skip_reshape=True, transformer_options)` with (B, heads, L, D). Neo's Krea engine sets `is_wan`, so the latent
  is (B, C, T, H, W) (T = 1 for an image; the model folds T into the batch) or (B, C, H, W), padded up to the
  patch; the text is `c_crossattn` (B, S, layers * dim), S tokens after fusion. With `ref_latents` among the
  model's keyword arguments, `_forward_with_refs` appends the references' tokens after the target's and calls
  each block's `attn` itself: the scope is the `attn` module, so those calls are served too. (Neo 5692d2d1 keeps
  Krea's references in `dynamic_args.ref_latents`, which krea.py never reads: they reach the model only through
  a cond named `ref_latents`.)
- diffusers (`DISPATCH`): Krea2Transformer2DModel; `Krea2AttnProcessor` of every main block's `attn` calls
  `dispatch_attention_fn` with (B, L, heads, D) after repeating the key/value heads, and, with
  `encoder_attention_mask`, a boolean (B, 1, 1, S + N) mask whose text columns stay with the kept keys. The
  text-fusion blocks use the same processor class, outside every scope. The latent is packed (B, N, C): the grid
  comes from `position_ids` (S + N, 3), image rows (0, row, col) row-major after the S text rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..joint_attention import ImageGrid
from .dit import DISPATCH, FORGE, DitCall, DitFamily, Role, forward_arguments, is_class_named, text_then_image
from .flux import target_grid

NATIVE_PX = 1024
TOKEN_PX = 16  # a 2x2 patch of a /8 latent
CLASS_NAME = "Krea2Transformer2DModel"
DIFFUSERS_PROCESSORS = ("Krea2AttnProcessor",)


def _blocks(network: Any, name: str) -> list[nn.Module]:
    blocks = getattr(network, name, None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


# Forge Neo


def is_forge_krea(network: Any) -> bool:
    """Neo's Krea 2 network: main `blocks` with `attn`, a `txtfusion` transformer, an integer `patch`."""
    blocks = _blocks(network, "blocks")
    if not blocks or not isinstance(getattr(network, "txtfusion", None), nn.Module):
        return False
    return isinstance(getattr(network, "patch", None), int) and hasattr(blocks[0], "attn")


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn` of every main block: [text, image, references]."""
    return [(block.attn, text_then_image) for block in _blocks(network, "blocks")]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The text length (`c_crossattn` as the model reads it: (B, S, fused), or (B, 1, S, fused)) and the target
    grid: the latent's sides over the patch, rounded up (the model pads)."""
    context = c.get("c_crossattn")
    patch = getattr(network, "patch", None)
    if not isinstance(context, torch.Tensor) or not isinstance(patch, int) or patch < 1 or x.dim() not in (4, 5):
        return None
    context = context.squeeze(1) if context.dim() == 4 else context
    if context.dim() != 3:
        return None
    h, w = -(-int(x.shape[-2]) // patch), -(-int(x.shape[-1]) // patch)
    return DitCall(ImageGrid(1, h, w), int(context.shape[1]))


FORGE_KREA = DitFamily(
    name="Krea 2",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_krea,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
)


# diffusers


def is_diffusers_krea(network: Any) -> bool:
    return is_class_named(network, CLASS_NAME)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn` of every main block whose processor is the plain one (never the text-fusion blocks)."""
    attns = [getattr(block, "attn", None) for block in _blocks(network, "transformer_blocks")]
    return [(a, text_then_image) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """forward(hidden_states, encoder_hidden_states, timestep, position_ids, ...): the text length S of
    `encoder_hidden_states` (B, S, layers, dim); the grid of the image rows of `position_ids` (the first group
    with t = 0; rows after it, references, are kept whole)."""
    named = forward_arguments(network, args, kwargs)
    hidden, encoder, ids = (named.get(n) for n in ("hidden_states", "encoder_hidden_states", "position_ids"))
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not isinstance(encoder, torch.Tensor):
        return None
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or encoder.dim() < 2:
        return None
    txt_len = int(encoder.shape[1])
    grid = target_grid(ids[txt_len:], int(hidden.shape[1]))
    return None if grid is None else DitCall(ImageGrid(1, *grid), txt_len)


DIFFUSERS_KREA = DitFamily(
    name="Krea 2",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_krea,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_KREA, DIFFUSERS_KREA)
