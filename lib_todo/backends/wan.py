"""The Wan family: Wan 2.1 / 2.2 (14B text-to-video and image-to-video), and Wan 2.2 TI2V-5B in diffusers.

Self-attention over the video tokens only, after RoPE: a 3-D grid of `frames x h x w` tokens (a (1, 2, 2) patch of
the latent (B, C, T, H, W), row-major: frame, row, column), no text among the keys. ToDo keeps one key per
`1 x f x f` cell of each frame (frames kept apart). Where f divides both sides every cell is full, so the balance
bias is one constant on every key and the engine leaves it out (softmax ignores it); it matters at border cells.
The text cross-attention (and the image one of Wan 2.1 i2v) is never touched. Image-to-video concatenates the
image latent and its mask along channels before the patch embedding: the token grid is the same.

Native size: Wan 2.2 14B was trained at 480p and 720p, so `NATIVE_PX` = 960 (sqrt(1280 * 720)): auto is off at
or below 720p and gives factor 2 from a per-frame geometric-mean side of ~1440 px (auto compares the frame's token
grid, not the frame count). A token is a 2x2 patch of a /8 latent: 16 px (TI2V-5B: of a /16 latent, 32 px).

- Forge Neo (`FORGE`, backend/nn/wan.py `WanModel`): `WanSelfAttention.forward` calls the module-level
  `attention()` wrapper, which calls `attention_function` with (B, L, heads*D); the cross-attention classes call
  `attention_function` directly, outside every scope, so they reach Neo's kernel untouched. The latent is padded up
  to the patch, so the grid is the latent's sides over the patch, rounded up. Neo's Radial Attention replaces the
  `attention()` wrapper per model call: in the blocks and steps it makes sparse, its kernel takes the call and
  `attention_function` (ToDo) is never reached, so ToDo leaves those calls to Radial (the pass state does not
  count them) and acts on the dense ones; Radial's wrapper must be set before ToDo's (it does not chain).
  Frames concatenated along time (`time_dim_concat`) follow the video's tokens and are kept whole.
- diffusers (`DISPATCH`): WanTransformer3DModel and WanVACETransformer3DModel (Wan 2.1, 2.2 A14B, TI2V-5B, VACE):
  the `attn1` of every block (and VACE block) whose processor is `WanAttnProcessor` calls `dispatch_attention_fn`
  with (B, L, heads, D); `attn2` (the text; in Wan 2.1 i2v the CLIP image context too) is left alone. A Wan 2.2
  pipeline's two experts (`transformer`, `transformer_2`) are both served by `lib_todo.apply(pipe)`. Not served:
  Wan-Animate (its first latent frame is the reference character and its face adapter is a separate attention)
  and Wan-Animate 2 (a KV-cache processor).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..joint_attention import ImageGrid, KeyLayout
from .dit import DISPATCH, FORGE, DitCall, DitFamily, Role, image_only, is_class_named

NATIVE_PX = 960  # sqrt(1280 * 720): Wan 2.2 14B was trained at 480p and 720p
TOKEN_PX = 16  # a 2x2 patch of a /8 latent (Wan 2.1 VAE)
TOKEN_PX_5B = 32  # TI2V-5B: a 2x2 patch of a /16 latent (Wan 2.2 VAE, 48 channels)
CHANNELS_5B = 48
DIFFUSERS_CLASSES = ("WanTransformer3DModel", "WanVACETransformer3DModel")
DIFFUSERS_PROCESSORS = ("WanAttnProcessor",)  # WanAttnProcessor2_0() makes one of these


def video_grid(latent_thw: tuple[int, ...], patch: tuple[int, ...], round_up: bool) -> ImageGrid:
    """The `frames x h x w` token grid of a latent (T, H, W) cut into `patch` (t, h, w) patches: Neo pads the
    latent up to the patch (`round_up`), diffusers' strided patch conv drops a remainder."""
    sides = [math.ceil(s / p) if round_up else s // p for s, p in zip(latent_thw, patch, strict=True)]
    return ImageGrid(*sides)


def video_then_frames(call: DitCall, length: int) -> KeyLayout | None:
    """[the video's grid, then `call.extra` tokens of frames concatenated along time (kept whole)]; exactly."""
    return KeyLayout(call.grid, 0, length) if length == call.grid.n + (call.extra or 0) else None


def is_forge_wan(network: Any) -> bool:
    """Neo's WanModel: a 3-D patch embedding and blocks with a self- and a cross-attention."""
    blocks = getattr(network, "blocks", None)
    return (
        isinstance(blocks, nn.ModuleList)
        and len(blocks) > 0
        and all(hasattr(b, "self_attn") and hasattr(b, "cross_attn") for b in blocks)
        and isinstance(getattr(network, "patch_embedding", None), nn.Conv3d)
        and len(getattr(network, "patch_size", ())) == 3
    )


def forge_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The self-attention of every block (the cross-attention is no scope: it runs on Neo's kernel untouched)."""
    return [(block.self_attn, video_then_frames) for block in network.blocks]


def forge_call(network: nn.Module, x: torch.Tensor, c: dict[str, Any]) -> DitCall | None:
    """The grid of the latent (B, C, T, H, W) padded up to the patch; `extra`: the tokens of frames concatenated
    along time (`time_dim_concat`), which follow the video's."""
    patch = tuple(getattr(network, "patch_size", ()))
    if x.dim() != 5 or len(patch) != 3:
        return None
    grid = video_grid(tuple(x.shape[-3:]), patch, round_up=True)
    concat = c.get("time_dim_concat")
    extra = 0
    if isinstance(concat, torch.Tensor) and concat.dim() == 5:
        extra = video_grid(tuple(concat.shape[-3:-2]) + tuple(x.shape[-2:]), patch, round_up=True).n
    return DitCall(grid, 0, extra)


FORGE_WAN = DitFamily(
    name="Wan",
    host="forge",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_forge_wan,
    scopes=forge_scopes,
    read_call=forge_call,
    convention=FORGE,
)


def is_diffusers_wan(network: Any) -> bool:
    return is_class_named(network, *DIFFUSERS_CLASSES)


def is_diffusers_wan_5b(network: Any) -> bool:
    """TI2V-5B: the Wan 2.2 VAE's 48 latent channels out (a /16 latent)."""
    config = getattr(network, "config", None)
    return is_diffusers_wan(network) and getattr(config, "out_channels", None) == CHANNELS_5B


def is_diffusers_wan_8x(network: Any) -> bool:
    return is_diffusers_wan(network) and not is_diffusers_wan_5b(network)


def diffusers_scopes(network: nn.Module) -> list[tuple[nn.Module, Role]]:
    """The `attn1` of every block and VACE block whose processor is Wan's own (`attn2` is no scope)."""
    blocks = [*getattr(network, "blocks", []), *getattr(network, "vace_blocks", [])]
    attns = [getattr(block, "attn1", None) for block in blocks]
    return [(a, image_only) for a in attns if type(getattr(a, "processor", None)).__name__ in DIFFUSERS_PROCESSORS]


def diffusers_call(network: nn.Module, args: tuple, kwargs: dict[str, Any]) -> DitCall | None:
    """The grid of `hidden_states` (B, C, T, H, W) after the strided patch conv."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    patch = tuple(getattr(getattr(network, "config", None), "patch_size", ()) or ())
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 5 or len(patch) != 3:
        return None
    return DitCall(video_grid(tuple(hidden.shape[-3:]), patch, round_up=False))


DIFFUSERS_WAN = DitFamily(
    name="Wan",
    host="diffusers",
    native_px=NATIVE_PX,
    token_px=TOKEN_PX,
    recognise=is_diffusers_wan_8x,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)
DIFFUSERS_WAN_5B = DitFamily(
    name="Wan",
    host="diffusers",
    native_px=NATIVE_PX,  # TI2V-5B was trained at 720p too (1280 x 704)
    token_px=TOKEN_PX_5B,
    recognise=is_diffusers_wan_5b,
    scopes=diffusers_scopes,
    read_call=diffusers_call,
    convention=DISPATCH,
)

FAMILIES = (FORGE_WAN, DIFFUSERS_WAN, DIFFUSERS_WAN_5B)
