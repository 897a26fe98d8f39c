"""The Ernie-Image family (baidu/ERNIE-Image and its fine-tunes).

Single-stream joint attention over [image, text] in every layer, IMAGE FIRST, after split-half RoPE; the text
follows the image and is kept whole. One token per 1x1 patch of the Flux.2 VAE's /16 latent (128 channels):
16 image pixels per token. Native 1024 px: diffusers' `ErnieImagePipeline.__call__` defaults to 1024 x 1024
(its docstring: "Default: 1024"); Neo gives no size (its presets leave width/height at 0).

- Forge Neo (`FORGE`, backend/nn/ernie.py `ErnieImageModel`): each layer's `self_attention`
  (`ErnieImageAttention.forward`) calls `attention_function(q, k, v, heads, mask=attention_mask)` with
  (B, L, heads*D), L = image + text; the model passes no mask. The latent is (B, 128, H, W) (`is_flux2` VAE, no
  time axis), patchified by a stride-`patch_size` conv without padding (Neo's detection leaves `patch_size` at
  its default 1); the text is `c_crossattn`.
- diffusers (`DISPATCH`): ErnieImageTransformer2DModel; `ErnieImageSingleStreamAttnProcessor` of every layer's
  `self_attention` calls `dispatch_attention_fn` with (B, L, heads, D), L = image + text, and a boolean
  (B, 1, 1, L) mask that is true on the image and on each item's valid text (`text_lens`): its text columns stay
  with the kept keys. The grid is the latent `hidden_states` (B, C, H, W) over `patch_size`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..joint_attention import ImageGrid
from .dit import DISPATCH, FORGE, DitCall, DitFamily, Role, forward_arguments, image_then_rest, is_class_named

NATIVE_PX = 1024
TOKEN_PX = 16  # a 1x1 patch of a /16 latent
CLASS_NAME = "ErnieImageTransformer2DModel"
DIFFUSERS_PROCESSORS = ("ErnieImageSingleStreamAttnProcessor",)


def _layers(network: Any) -> list[nn.Module]:
    layers = getattr(network, "layers", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


def _grid(x: Any, patch: Any) -> ImageGrid | None:
    """The token grid of a (B, C, H, W) latent cut into patch x patch squares (no padding: the sides must divide)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not isinstance(patch, int) or patch < 1:
        return None
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % patch or w % patch:
        return None
    return ImageGrid(1, h // patch, w // patch)


# Forge Neo


def is_forge_ernie(network: Any) -> bool:
    """Neo's Ernie-Image network: `layers` whose blocks hold `self_attention` and the shared adaLN norms."""
    layers = _layers(network)
    if not layers or not hasattr(network, "x_embedder") or not isinstance(getattr(network, "patch_size", None), int):
        return False
    return hasattr(layers[0], "self_attention") and hasattr(layers[0], "adaLN_sa_ln")


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `self_attention` of every layer: [image, text]."""
    return [(layer.self_attention, image_then_rest) for layer in _layers(network)]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The image grid of the latent (B, C, H, W) over the patch, and the text length (`c_crossattn`)."""
    context = c.get("c_crossattn")
    grid = _grid(x, getattr(network, "patch_size", None))
    if grid is None or not isinstance(context, torch.Tensor) or context.dim() != 3:
        return None
    return DitCall(grid, int(context.shape[1]))


FORGE_ERNIE = DitFamily(
    name="Ernie-Image",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_ernie,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
)


# diffusers


def is_diffusers_ernie(network: Any) -> bool:
    return is_class_named(network, CLASS_NAME)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `self_attention` of every layer whose processor is the plain single-stream one."""
    attns = [getattr(layer, "self_attention", None) for layer in _layers(network)]
    return [(a, image_then_rest) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """forward(hidden_states, timestep, text_bth, text_lens, ...): the grid of `hidden_states` over the patch,
    the (padded) text length of `text_bth`."""
    named = forward_arguments(network, args, kwargs)
    hidden, text = named.get("hidden_states"), named.get("text_bth")
    grid = _grid(hidden, getattr(network, "patch_size", None))
    if grid is None or not isinstance(text, torch.Tensor) or text.dim() != 3:
        return None
    return DitCall(grid, int(text.shape[1]))


DIFFUSERS_ERNIE = DitFamily(
    name="Ernie-Image",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_ernie,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_ERNIE, DIFFUSERS_ERNIE)
