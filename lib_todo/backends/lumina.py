"""The NextDiT family: Lumina-Image-2.0 (and Neta, a Lumina 2 fine-tune) and Z-Image (base, turbo).

One token per 2x2 patch of a /8 latent (16 image pixels per token side), native 1024 px. Every block attends over
one sequence; three kinds of blocks see different tokens:
- context refiners: the caption only. Never touched (they are in no scope, so their calls go to the host).
- noise refiners: the image tokens (row-major), followed by whatever pads them; downsampled, pads kept whole.
- main layers: caption and image joined, each with its padding; the image grid downsampled, the rest whole.
Where the target image starts among the keys of each kind is read once per model call (`TargetSpans`, in
`DitCall.extra`); a call whose keys have another length is left alone and counted.

- Forge Neo (`NextDiT`, backend/nn/lumina.py; `FORGE`): the caption (`c_crossattn`) is padded to a multiple of
  `pad_tokens_multiple` (Z-Image: 32; Lumina 2: none) with a learned token, the image tokens likewise with
  `x_pad_token`; refiners see [image, pads], main layers [caption + pads, image, pads]. `JointAttention` calls
  `attention_function(q, k, v, heads, x_mask, skip_reshape=True, ...)` with (B, heads, L, D), GQA heads repeated.
  The scopes are the blocks' `attention` modules, so a variant whose attention class lives in another module
  (Neo's Nunchaku Z-Image, `NunchakuZImageAttention` in svdq.py: fused QKV/RoPE, then the same call) is served
  through that module's own `attention_function`. Z-Image and Lumina 2 differ here only in their modulation
  (Z-Image's adaLN is a bare Linear) and padding, so the name follows the first.
- diffusers `Lumina2Transformer2DModel` (`SDPA`: its processor calls `F.scaled_dot_product_attention`, with
  `scale` and a boolean key mask): main layers hold [the item's valid caption prefix (encoder_attention_mask
  summed), image, zeros up to the longest item], so the image starts at a different index per item; the noise
  refiner sees the image alone.
- diffusers `ZImageTransformer2DModel` (`DISPATCH`): image and caption each padded to a multiple of 32 with
  learned tokens; noise refiner [image, pads], main layers [image, pads, caption, pads] (image FIRST), zeros up to
  the longest item with a key mask then. Omni mode (`x` a list of images per item: condition images, then the
  target; SigLIP tokens): the target is the last image of each item (the one unpatchify returns); its start is
  known exactly from the lengths of the captions and earlier images, so it is downsampled, and the condition
  images, SigLIP and caption tokens are kept whole as reference tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..grid import level_grid
from ..joint_attention import ImageGrid, KeyLayout
from .dit import DISPATCH, FORGE, SDPA, DitCall, DitFamily, Role, forward_arguments, is_class_named

NATIVE_PX = 1024
TOKEN_PX = 16  # a 2x2 patch of a /8 latent (Flux's VAE for Lumina 2 and Z-Image)
Z_IMAGE_MULTIPLE = 32  # diffusers' SEQ_MULTI_OF: Z-Image pads each image and caption to a multiple of this


@dataclass(frozen=True)
class Span:
    """Where the target image starts among one kind of attention's keys (an int, or one per batch item), and how
    many keys that attention has."""

    start: int | tuple[int, ...]
    length: int


def span(starts: list[int] | tuple[int, ...], length: int) -> Span:
    """A Span whose per-item starts collapse to one int when every item has the same."""
    starts = tuple(int(s) for s in starts)
    return Span(starts[0] if len(set(starts)) == 1 else starts, int(length))


@dataclass(frozen=True)
class TargetSpans:
    """The target image in the noise refiners' keys and in the main layers' keys (`DitCall.extra`)."""

    refiner: Span
    joint: Span


def _layout(call: DitCall, where: Span) -> KeyLayout | None:
    if not isinstance(where, Span):
        return None
    starts = where.start if isinstance(where.start, tuple) else (where.start,)
    return KeyLayout(call.grid, where.start, where.length) if max(starts) + call.grid.n <= where.length else None


def in_noise_refiner(call: DitCall, length: int) -> KeyLayout | None:
    """[image, its padding or other images] in a noise refiner, when the keys have the length the call expects."""
    where = getattr(call.extra, "refiner", None)
    return _layout(call, where) if getattr(where, "length", None) == length else None


def in_main_layer(call: DitCall, length: int) -> KeyLayout | None:
    """Caption and image joined in a main layer, when the keys have the length the call expects."""
    where = getattr(call.extra, "joint", None)
    return _layout(call, where) if getattr(where, "length", None) == length else None


def padded(n: int, multiple: int | None) -> int:
    """`n` tokens padded up to a multiple of `multiple` (none: as is)."""
    return n + (-n) % multiple if multiple else n


# Forge Neo


def is_forge_nextdit(network: Any) -> bool:
    """Neo's NextDiT (Lumina 2, Neta, Z-Image, Nunchaku Z-Image): caption and noise refiners, main layers, the
    caption embedder and `pad_tokens_multiple` (diffusers' classes have no such attribute)."""
    lists = [getattr(network, n, None) for n in ("noise_refiner", "context_refiner", "layers")]
    return (
        all(isinstance(m, nn.ModuleList) for m in lists)
        and len(lists[2]) > 0
        and hasattr(network, "cap_embedder")
        and hasattr(network, "pad_tokens_multiple")
    )


def has_z_image_modulation(network: Any) -> bool:
    """Z-Image's blocks modulate through a bare Linear (`z_image_modulation`); Lumina 2's through SiLU, Linear."""
    modulation = getattr(network.layers[0], "adaLN_modulation", None)
    return isinstance(modulation, nn.Sequential) and len(modulation) > 0 and isinstance(modulation[0], nn.Linear)


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The attention module of every noise-refiner block and every main layer (context refiners left out)."""
    refiners = [(b.attention, in_noise_refiner) for b in network.noise_refiner if hasattr(b, "attention")]
    return refiners + [(b.attention, in_main_layer) for b in network.layers if hasattr(b, "attention")]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The grid of the latent patchified (padded up to the patch), the caption and image padded to the multiple."""
    context = c.get("c_crossattn")
    patch = int(getattr(network, "patch_size", 2))
    if x.dim() != 4 or not isinstance(context, torch.Tensor) or context.dim() != 3 or patch not in (1, 2):
        return None
    h, w = level_grid((int(x.shape[-2]), int(x.shape[-1])), patch)
    multiple = getattr(network, "pad_tokens_multiple", None)
    caption, image = padded(int(context.shape[1]), multiple), padded(h * w, multiple)
    spans = TargetSpans(refiner=Span(0, image), joint=Span(caption, caption + image))
    return DitCall(ImageGrid(1, h, w), caption, spans)


def _forge_family(name: str, z_image: bool) -> DitFamily:
    return DitFamily(
        name=name,
        host="forge",
        native_px=NATIVE_PX,
        token_px=TOKEN_PX,
        recognise=lambda n: is_forge_nextdit(n) and has_z_image_modulation(n) == z_image,
        scopes=forge_scopes,
        read_call=forge_call,
        convention=FORGE,
    )


FORGE_LUMINA = _forge_family("Lumina 2", z_image=False)
FORGE_Z_IMAGE = _forge_family("Z-Image", z_image=True)


# diffusers


def _attention_scopes(network: nn.Module, attr: str, processor: str) -> list[tuple[nn.Module, Role]]:
    """`attr` of each noise-refiner block and main layer whose processor is the family's own."""

    def ours(block: nn.Module) -> nn.Module | None:
        attn = getattr(block, attr, None)
        return attn if type(getattr(attn, "processor", None)).__name__ == processor else None

    refiners = [(a, in_noise_refiner) for a in map(ours, network.noise_refiner) if a is not None]
    return refiners + [(a, in_main_layer) for a in map(ours, network.layers) if a is not None]


def lumina2_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """The grid of `hidden_states` (B, C, H, W) in patches; each item's caption length from
    `encoder_attention_mask` (B, T), summed: the image follows that many caption tokens in the main layers."""
    named = forward_arguments(network, args, kwargs)
    hidden, mask = named.get("hidden_states"), named.get("encoder_attention_mask")
    patch = int(network.config.patch_size)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 4 or not isinstance(mask, torch.Tensor):
        return None
    if mask.dim() != 2 or mask.shape[0] != hidden.shape[0] or hidden.shape[-2] % patch or hidden.shape[-1] % patch:
        return None
    grid = ImageGrid(1, hidden.shape[-2] // patch, hidden.shape[-1] // patch)
    captions = [int(n) for n in mask.sum(dim=1).tolist()]
    spans = TargetSpans(refiner=Span(0, grid.n), joint=span(captions, max(captions) + grid.n))
    return DitCall(grid, max(captions), spans)


def z_image_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """The target's grid and where it sits, from `x` (a list of (C, F, H, W) latents, or in omni mode a list per
    item ending with the target), `cap_feats`, `siglip_feats` and the patch sizes; None when the items' targets
    differ in size or the arguments are shaped otherwise."""
    named = forward_arguments(network, args, kwargs)
    x, captions, siglip = named.get("x"), named.get("cap_feats"), named.get("siglip_feats")
    patch, f_patch = int(named.get("patch_size", 2)), int(named.get("f_patch_size", 1))
    if not isinstance(x, (list, tuple)) or not x or not isinstance(captions, (list, tuple)) or len(captions) != len(x):
        return None
    omni = isinstance(x[0], (list, tuple))
    items = [list(i) if omni else [i] for i in x]
    caption_items = [list(c) if omni else [c] for c in captions]
    targets = [item[-1] if item else None for item in items]
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape == targets[0].shape for t in targets):
        return None
    frames, h, w = (int(s) // p for s, p in zip(targets[0].shape[1:], (f_patch, patch, patch), strict=True))
    grid = ImageGrid(frames, h, w)
    before = [sum(_image_tokens(i, patch, f_patch) for i in item[:-1]) for item in items]  # earlier images
    images = [b + padded(grid.n, Z_IMAGE_MULTIPLE) for b in before]  # all of an item's image tokens
    caps = [sum(padded(len(c), Z_IMAGE_MULTIPLE) for c in item) for item in caption_items]
    sig = [0] * len(items)
    if omni and getattr(network, "siglip_embedder", None) is not None and siglip and siglip[0] is not None:
        if len(siglip) != len(items):
            return None
        sig = [sum(_siglip_tokens(s) for s in item or []) for item in siglip]
    if omni:  # [caption, images, siglip]
        totals = [c + i + s for c, i, s in zip(caps, images, sig, strict=True)]
        joint = span([c + b for c, b in zip(caps, before, strict=True)], max(totals))
    else:  # [image, pads, caption, pads]
        joint = Span(0, max(i + c for i, c in zip(images, caps, strict=True)))
    return DitCall(grid, max(caps), TargetSpans(refiner=span(before, max(images)), joint=joint))


def _image_tokens(latent: Any, patch: int, f_patch: int) -> int:
    """Tokens an omni condition image takes (padded to the multiple; a missing one is one multiple of pads)."""
    if latent is None:
        return Z_IMAGE_MULTIPLE
    f, h, w = (int(s) // p for s, p in zip(latent.shape[1:], (f_patch, patch, patch), strict=True))
    return padded(f * h * w, Z_IMAGE_MULTIPLE)


def _siglip_tokens(features: Any) -> int:
    """Tokens one SigLIP feature map (H, W, C) takes (padded; a missing one is one multiple of pads)."""
    if features is None:
        return Z_IMAGE_MULTIPLE
    return padded(int(features.shape[0]) * int(features.shape[1]), Z_IMAGE_MULTIPLE)


DIFFUSERS_LUMINA = DitFamily(
    name="Lumina 2",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=lambda n: is_class_named(n, "Lumina2Transformer2DModel"),
    scopes=lambda n: _attention_scopes(n, "attn", "Lumina2AttnProcessor2_0"),
    read_call=lumina2_call,
    convention=SDPA,
)

DIFFUSERS_Z_IMAGE = DitFamily(
    name="Z-Image",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=lambda n: is_class_named(n, "ZImageTransformer2DModel"),
    scopes=lambda n: _attention_scopes(n, "attention", "ZSingleStreamAttnProcessor"),
    read_call=z_image_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_LUMINA, FORGE_Z_IMAGE, DIFFUSERS_LUMINA, DIFFUSERS_Z_IMAGE)
