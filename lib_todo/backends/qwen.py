"""The Qwen-Image family: Qwen-Image, Qwen-Image-Edit (2509, 2511), their fine-tunes; on diffusers also
Qwen-Image-Layered.

Joint attention over [text, image (, reference images)] in every block, text first, RoPE on the joint q/k; one
token per 2x2 patch of a /8 latent: 16 image pixels per token; native 1328 px (Qwen-Image's 1:1 training size).
Edit's reference images follow the target image and are kept whole, as is the text (with its padding).

- Forge Neo (`FORGE`): `backend/nn/qwen.py`. Each block's `Attention.forward` calls `attention_function(q, k, v,
  heads, attention_mask)` with (B, L, heads*D), L = text + target + references; the mask is never passed (Neo's
  blocks hand the attention `encoder_hidden_states_mask`, which it ignores). The latent is (B, C, 1, H, W),
  padded to the patch; the text is `c_crossattn` (Forge repeats shorter conds to one length, no mask). Edit's
  reference latents (`ref_latents`, or Neo's global `dynamic_args.ref_latents`) are patchified after the target.
  Nunchaku's SVDQ Qwen-Image (a subclass, same attention call) is served unless it streams its blocks through
  CPU-offload buffer copies, which ToDo's hooks on the model's own blocks never see.
- diffusers (`DIFFUSERS`): QwenImageTransformer2DModel; `QwenDoubleStreamAttnProcessor2_0` calls
  `dispatch_attention_fn` with [text, image] (B, L, heads, D) and, with `encoder_hidden_states_mask`, a boolean
  (B, 1, 1, T + N) mask whose text columns ToDo keeps per kept key (captions of different length per item). The
  target grid is the first `img_shapes` entry (read as the model's RoPE reads it: the first batch item's);
  further entries are reference images. Qwen-Image-Layered (`QwenEmbedLayer3DRope`) generates its layers
  together: the layer entries (all but the last, the condition image) are the target's frames.
  Qwen-Image 2.1 (`QwenImage21Transformer2DModel`) is another model: block-causal single-stream attention whose
  target-image queries attend to [prefix, target] keys (fewer queries than keys), through a flex BlockMask or a
  KV cache; not served.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..joint_attention import ImageGrid
from .dit import DISPATCH, FORGE, DitCall, DitFamily, Role, forward_arguments, is_class_named, text_then_image

NATIVE_PX = 1328
TOKEN_PX = 16  # a 2x2 patch of a /8 latent
CLASS_NAME = "QwenImageTransformer2DModel"
NUNCHAKU_CLASS = "NunchakuQwenImageTransformer2DModel"
DIFFUSERS_PROCESSORS = ("QwenDoubleStreamAttnProcessor2_0",)  # plain joint attention (not a KV-cache or IP one)
LAYERED_ROPE = "QwenEmbedLayer3DRope"


def _blocks(network: nn.Module) -> list[nn.Module]:
    blocks = getattr(network, "transformer_blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


# Forge Neo


def is_forge_qwen(network: Any) -> bool:
    """Neo's (or Nunchaku's) Qwen-Image network: patchifies its own latent (`process_img`), blocks with `attn`."""
    blocks = _blocks(network) if is_class_named(network, CLASS_NAME) else []
    return bool(blocks) and callable(getattr(network, "process_img", None)) and hasattr(blocks[0], "attn")


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn` of every block: [text, target image, reference images]."""
    return [(block.attn, text_then_image) for block in _blocks(network)]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The text length (`c_crossattn`) and the target grid: the latent (B, C, 1, H, W) padded up to the patch."""
    context = c.get("c_crossattn")
    patch = getattr(network, "patch_size", 2)
    if not isinstance(context, torch.Tensor) or context.dim() != 3 or not isinstance(patch, int) or patch < 1:
        return None
    if not (x.dim() == 4 or (x.dim() == 5 and x.shape[2] == 1)):  # Neo folds the one frame away; more is not Qwen
        return None
    h, w = -(-int(x.shape[-2]) // patch), -(-int(x.shape[-1]) // patch)
    return DitCall(ImageGrid(1, h, w), int(context.shape[1]))


def forge_why_not(network: Any) -> str | None:
    """Nunchaku's Qwen-Image with CPU offload runs most blocks as copies ToDo's hooks never see."""
    if is_class_named(network, NUNCHAKU_CLASS) and getattr(network, "offload", False):
        return (
            f"{type(network).__name__} with Nunchaku's CPU offload runs its blocks through buffer copies that ToDo "
            "cannot follow; turn the offload off in the Nunchaku settings to use ToDo"
        )
    return None


FORGE_QWEN = DitFamily(
    name="Qwen-Image",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_qwen,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
    why_not=forge_why_not,
)


# diffusers


def is_diffusers_qwen(network: Any) -> bool:
    """diffusers' QwenImageTransformer2DModel (its RoPE module is `pos_embed`; Neo's is `pe_embedder`)."""
    return is_class_named(network, CLASS_NAME) and isinstance(getattr(network, "pos_embed", None), nn.Module)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn` of every block whose processor is diffusers' own joint-attention one."""
    attns = [getattr(block, "attn", None) for block in _blocks(network)]
    return [(a, text_then_image) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """Text length from `encoder_hidden_states` (its padding stays in the keys, under the mask), the target grid
    from `img_shapes`; None when the shapes do not add up to the image tokens."""
    named = forward_arguments(network, args, kwargs)
    hidden, encoder = named.get("hidden_states"), named.get("encoder_hidden_states")
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not isinstance(encoder, torch.Tensor):
        return None
    layered = type(getattr(network, "pos_embed", None)).__name__ == LAYERED_ROPE
    grid = target_grid(named.get("img_shapes"), int(hidden.shape[1]), layered)
    return None if grid is None else DitCall(grid, int(encoder.shape[1]))


def target_grid(img_shapes: Any, n_image: int, layered: bool = False) -> ImageGrid | None:
    """The target's token grid from diffusers' `img_shapes`, read as its RoPE reads them: the first batch item's
    list of (frames, h, w), the target first and reference images after it. `layered` (Qwen-Image-Layered): every
    entry but the last (the condition image) is a layer of the target, one frame each, all of one size.
    None unless the entries hold exactly `n_image` tokens."""
    entries = img_shapes[0] if isinstance(img_shapes, list) and img_shapes else img_shapes
    entries = entries if isinstance(entries, list) else [entries]
    if not all(isinstance(e, (tuple, list)) and len(e) == 3 for e in entries):
        return None
    shapes = [tuple(int(v) for v in e) for e in entries]
    if not shapes or min(min(s) for s in shapes) < 1 or sum(math.prod(s) for s in shapes) != n_image:
        return None
    if not layered:
        return ImageGrid(*shapes[0])
    layers = shapes[:-1]
    if not layers or any(s != (1, *layers[0][1:]) for s in layers):
        return None
    return ImageGrid(len(layers), *layers[0][1:])


DIFFUSERS_QWEN = DitFamily(
    name="Qwen-Image",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_qwen,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_QWEN, DIFFUSERS_QWEN)
