"""The Flux family: Flux.1 (dev, schnell, Kontext, Krea [dev] and fine-tunes), Chroma, Flux.2 (klein).

Joint attention over [text, image] in every double and single block, after RoPE; one token per 2x2 patch of a /8
latent (Flux.2: per 1x1 patch of a /16 latent), 16 image pixels per token either way; native 1024 px.
Kontext / Flux.2 reference images follow the target image and are kept whole.

- Forge main, Forge Neo, reForge (`FORGE`): the blocks call a module-level `attention(q, k, v, pe, ...)` that
  applies RoPE and calls `attention_function` (reForge: `optimized_attention`) with (B, heads, L, D). Neo's
  older builds put the image first in double blocks with `flipped_img_txt`; the role is read per block.
- diffusers (`DIFFUSERS`): FluxTransformer2DModel, ChromaTransformer2DModel (Flux's processor),
  Flux2Transformer2DModel; each block's `attn` processor calls `dispatch_attention_fn` with (B, L, heads, D).
  The grid comes from `img_ids` ([*, row, col] row-major; a first group of ids with the first coordinate 0 is
  the target, whatever follows is a reference image).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..grid import level_grid
from ..joint_attention import ImageGrid
from .dit import (
    DISPATCH,
    FORGE,
    DitCall,
    DitFamily,
    Role,
    forward_arguments,
    image_then_rest,
    is_class_named,
    text_then_image,
)

NATIVE_PX = 1024
TOKEN_PX = 16  # Flux.1: a 2x2 patch of a /8 latent; Flux.2: a 1x1 patch of a /16 latent
DIFFUSERS_CLASSES = ("FluxTransformer2DModel", "ChromaTransformer2DModel", "Flux2Transformer2DModel")
# The processors that run plain joint attention (IP-Adapter's or a KV-cache processor reorder or add keys).
DIFFUSERS_PROCESSORS = (
    "FluxAttnProcessor",
    "FluxAttnProcessor2_0",
    "Flux2AttnProcessor",
    "Flux2ParallelSelfAttnProcessor",
)


def is_forge_flux(network: Any) -> bool:
    """Forge's / Neo's / reForge's Flux-family network: double and single blocks."""
    doubles = getattr(network, "double_blocks", None)
    singles = getattr(network, "single_blocks", None)
    return isinstance(doubles, nn.ModuleList) and isinstance(singles, nn.ModuleList) and len(doubles) > 0


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """Every double block (image first where Neo flips it) and every single block (text first)."""
    doubles = [
        (b, image_then_rest if getattr(b, "flipped_img_txt", False) else text_then_image) for b in network.double_blocks
    ]
    return doubles + [(b, text_then_image) for b in network.single_blocks]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The text length (`c_crossattn`) and the image grid of the latent patchified (padded up to the patch)."""
    context = c.get("c_crossattn")
    patch = getattr(network, "patch_size", 2)
    if x.dim() != 4 or not isinstance(context, torch.Tensor) or patch not in (1, 2):
        return None
    return DitCall(ImageGrid(1, *level_grid((int(x.shape[-2]), int(x.shape[-1])), patch)), int(context.shape[1]))


FORGE_FLUX = DitFamily(
    name="Flux",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_flux,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
)


def is_diffusers_flux(network: Any) -> bool:
    return is_class_named(network, *DIFFUSERS_CLASSES)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn` of every double and single block whose processor is a plain joint-attention one."""
    blocks = [*getattr(network, "transformer_blocks", []), *getattr(network, "single_transformer_blocks", [])]
    attns = [getattr(block, "attn", None) for block in blocks]
    return [(a, text_then_image) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """Text length from `encoder_hidden_states`, the target's grid from `img_ids`. Flux.2's KV-cache modes
    (reference tokens first, or cached apart) are sat out."""
    named = forward_arguments(network, args, kwargs)
    hidden, encoder = named.get("hidden_states"), named.get("encoder_hidden_states")
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not isinstance(encoder, torch.Tensor):
        return None
    if named.get("kv_cache") is not None or named.get("num_ref_tokens"):
        return None
    grid = target_grid(named.get("img_ids"), int(hidden.shape[1]))
    return None if grid is None else DitCall(ImageGrid(1, *grid), int(encoder.shape[1]))


def target_grid(img_ids: Any, n_image: int) -> tuple[int, int] | None:
    """The `h x w` grid of the target image: the first group of ids (those sharing the first coordinate 0),
    which must be [*, row, col] row-major; None when the ids say otherwise."""
    if not isinstance(img_ids, torch.Tensor) or img_ids.dim() not in (2, 3) or img_ids.shape[-1] < 3:
        return None
    ids = img_ids[0] if img_ids.dim() == 3 else img_ids
    if ids.shape[0] != n_image or n_image == 0 or float(ids[0, 0]) != 0.0:
        return None
    lead = int((ids[:, 0] == ids[0, 0]).int().cumprod(0).sum().item())
    return image_grid(ids[:lead], lead)


def image_grid(img_ids: torch.Tensor | None, n_image: int) -> tuple[int, int] | None:
    """The `h x w` grid of `n_image` tokens whose ids are [*, row, col] row-major, or None if they are not."""
    if not isinstance(img_ids, torch.Tensor) or img_ids.dim() not in (2, 3) or img_ids.shape[-1] < 3:
        return None
    ids = img_ids[0] if img_ids.dim() == 3 else img_ids
    if ids.shape[0] != n_image or n_image == 0:
        return None
    rows, cols = ids[:, 1] - ids[0, 1], ids[:, 2] - ids[0, 2]
    h, w = int(rows.max().item()) + 1, int(cols.max().item()) + 1
    if h * w != n_image:
        return None
    expected_rows = torch.arange(h, device=ids.device).repeat_interleave(w).to(ids.dtype)
    expected_cols = torch.arange(w, device=ids.device).repeat(h).to(ids.dtype)
    return (h, w) if torch.equal(rows, expected_rows) and torch.equal(cols, expected_cols) else None


DIFFUSERS_FLUX = DitFamily(
    name="Flux",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_flux,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_FLUX, DIFFUSERS_FLUX)
