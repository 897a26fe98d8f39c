"""Stand-in for Forge Neo's backend/nn/wan.py (`WanModel`, Wan 2.1 / 2.2 14B), small and in our words.

What ToDo relies on:
- the latent is (B, C, T, H, W); image-to-video concatenates the image latent and its mask along C (Neo's global
  `dynamic_args.concat_latent`: `concat_latent` here; doubled for a batch of 2, cond and uncond) before the
  patch embedding, so the token grid is the same; frames given as `time_dim_concat` are concatenated along T;
- the whole is padded up to the patch (1, 2, 2) (circular) and cut into tokens by a Conv3d, row-major (frame,
  row, column); RoPE on (frame, row, column), applied to q and k before attention;
- `WanSelfAttention.forward` calls the module-level `attention(q, k, v, heads=..., transformer_options=...)`
  with (B, L, heads*D), which calls `attention_function` (Radial Attention replaces `attention` per call);
- the text cross-attention (and the i2v one: image context first, then text, two calls) calls the module-level
  `attention_function(q, k, v, heads=...)` directly;
- the model writes `block_index` into `transformer_options` before each block;
- the output is the video's frames only, cropped back to the latent's size.
Left out: the time embedding's per-token form, `blocks_replace` patches, the CLIP image projection's details.
The kernel, the patcher and RoPE's pieces are the other Neo stand-ins' (`neo_parts`). `radial_like_wrapper` does
to this module what Neo's Radial Attention does to backend/nn/wan.py.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .neo_parts import (  # noqa: F401 - neo_patcher, call_patcher: the tests reach them from here
    angles,
    attention_function,
    call_patcher,
    grid_positions,
    neo_patcher,
    rms,
    rotate_pairs,
    timestep_features,
)

concat_latent: torch.Tensor | None = None  # Neo's dynamic_args.concat_latent: read by the model itself


def attention(*args: Any, **kwargs: Any) -> torch.Tensor:
    """The self-attention's kernel, a module-level name of its own so that Radial Attention can replace it."""
    return attention_function(*args, **kwargs)


def rope_angles(frames: int, h: int, w: int, head_dim: int) -> torch.Tensor:
    """(frames*h*w, head_dim/2) angles: the channel pairs split over the (frame, row, column) axes."""
    pairs = head_dim // 2
    return angles(grid_positions(frames, h, w), [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3], 10_000.0)


class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, freqs, transformer_options=None):
        b, n = x.shape[:2]
        q = rotate_pairs(rms(self.q(x)).view(b, n, self.num_heads, -1), freqs[:, None]).flatten(2)
        k = rotate_pairs(rms(self.k(x)).view(b, n, self.num_heads, -1), freqs[:, None]).flatten(2)
        out = attention(q, k, self.v(x), heads=self.num_heads, transformer_options=transformer_options or {})
        return self.o(out)


class WanT2VCrossAttention(WanSelfAttention):
    def forward(self, x, context, context_img_len=None):
        q, k, v = rms(self.q(x)), rms(self.k(context)), self.v(context)
        return self.o(attention_function(q, k, v, heads=self.num_heads))


class WanI2VCrossAttention(WanSelfAttention):
    """Wan 2.1 i2v: the first `context_img_len` context tokens are the CLIP image's, attended apart."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x, context, context_img_len=None):
        image, text = context[:, :context_img_len], context[:, context_img_len:]
        q = rms(self.q(x))
        from_image = attention_function(q, rms(self.k_img(image)), self.v_img(image), heads=self.num_heads)
        from_text = attention_function(q, rms(self.k(text)), self.v(text), heads=self.num_heads)
        return self.o(from_text + from_image)


class WanAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, i2v: bool) -> None:
        super().__init__()
        self.self_attn = WanSelfAttention(dim, heads)
        self.cross_attn = (WanI2VCrossAttention if i2v else WanT2VCrossAttention)(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim))

    def forward(self, x, e, freqs, context, context_img_len=None, transformer_options=None):
        shift, scale, gate, c_shift, c_scale, c_gate = (self.modulation + e).chunk(6, dim=1)
        normed = F.layer_norm(x, x.shape[-1:])
        x = x + gate * self.self_attn(normed * (1 + scale) + shift, freqs, transformer_options=transformer_options)
        x = x + self.cross_attn(F.layer_norm(x, x.shape[-1:]), context, context_img_len=context_img_len)
        return x + c_gate * self.ffn(F.layer_norm(x, x.shape[-1:]) * (1 + c_scale) + c_shift)


class WanModel(nn.Module):
    """Neo's WanModel in small: `model_type` "t2v" or "i2v" (in_dim = latent channels + image latent and mask)."""

    def __init__(
        self, model_type="t2v", in_dim=4, out_dim=4, dim=32, num_heads=2, num_layers=2, text_dim=12, image_dim=8
    ) -> None:
        super().__init__()
        self.model_type = model_type
        self.patch_size = (1, 2, 2)
        self.in_dim, self.out_dim, self.dim, self.num_heads = in_dim, out_dim, dim, num_heads
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.text_embedding = nn.Linear(text_dim, dim)
        self.time_embedding = nn.Linear(16, dim)
        self.time_projection = nn.Linear(dim, 6 * dim)
        i2v = model_type == "i2v"
        self.blocks = nn.ModuleList(WanAttentionBlock(dim, num_heads, i2v) for _ in range(num_layers))
        self.head = nn.Linear(dim, out_dim * math.prod(self.patch_size))
        self.img_emb = nn.Linear(image_dim, dim) if i2v else None

    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None, **kw):
        transformer_options = {} if transformer_options is None else transformer_options
        t, h, w = x.shape[-3:]
        if x.shape[1] < self.in_dim:  # image-to-video: the image latent and mask, read from Neo's global
            extra = concat_latent.to(x)
            x = torch.cat([x, torch.cat([extra] * x.shape[0]) if extra.shape[0] != x.shape[0] else extra], dim=1)
        x = pad_to_patch(x, self.patch_size)
        if time_dim_concat is not None:
            x = torch.cat([x, pad_to_patch(time_dim_concat, self.patch_size)], dim=2)
        tokens = self.patch_embedding(x)
        grid = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        freqs = rope_angles(*grid, self.dim // self.num_heads)
        e = self.time_embedding(timestep_features(timestep, 16))
        e0 = self.time_projection(F.silu(e)).unflatten(1, (6, self.dim))
        context = self.text_embedding(context)
        context_img_len = None
        if clip_fea is not None and self.img_emb is not None:
            context = torch.cat([self.img_emb(clip_fea), context], dim=1)
            context_img_len = clip_fea.shape[1]
        for i, block in enumerate(self.blocks):
            transformer_options["block_index"] = i
            tokens = block(tokens, e0, freqs, context, context_img_len, transformer_options=transformer_options)
        out = self.head(F.layer_norm(tokens, tokens.shape[-1:]))
        return unpatchify(out, tuple(grid), self.patch_size, self.out_dim)[:, :, :t, :h, :w]


def pad_to_patch(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) padded circularly at the end of each of T, H, W up to a multiple of the patch."""
    pad: tuple[int, ...] = ()
    for side, p in zip(x.shape[2:], patch, strict=True):
        pad = (0, (-side) % p) + pad
    return F.pad(x, pad, mode="circular")


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int], channels: int):
    """(B, frames*h*w, channels*prod(patch)) -> (B, channels, frames*pt, h*ph, w*pw)."""
    b = tokens.shape[0]
    x = tokens[:, : math.prod(grid)].reshape(b, *grid, *patch, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, channels, *(g * p for g, p in zip(grid, patch, strict=True)))


def radial_like_wrapper(module: Any, dense_block: int, calls: list[int]) -> Any:
    """A UNet function wrapper that does what Neo's Radial Attention does to Wan: per model call, it puts its own
    kernel in place of the module's `attention()`; blocks from `dense_block` on attend through it (here: each
    token to the keys of its own frame and the first frame, never calling `attention_function`; each call's
    block index recorded in `calls`), earlier blocks through the original `attention()`. Like Radial, it calls
    the model function it is given and leaves its kernel in place after the call."""
    original = module.attention

    def sparse(q, k, v, heads, transformer_options=None, **kwargs):
        calls.append(transformer_options["block_index"])
        q4, k4, v4 = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        n = q.shape[1]
        frame = torch.arange(n) // frame_tokens[0]
        allowed = (frame[:, None] == frame[None, :]) | (frame[None, :] == 0)
        return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=allowed).transpose(1, 2).flatten(2)

    def choose(*args, **kwargs):
        if kwargs.get("transformer_options", {}).get("block_index", -1) >= dense_block:
            return sparse(*args, **kwargs)
        return original(*args, **kwargs)

    frame_tokens = [1]

    def wrapper(model_function, args):
        x = args["input"]
        frame_tokens[0] = math.ceil(x.shape[-2] / 2) * math.ceil(x.shape[-1] / 2)
        module.attention = choose
        return model_function(x, args["timestep"], **args["c"])

    wrapper.original_attention = original
    return wrapper
