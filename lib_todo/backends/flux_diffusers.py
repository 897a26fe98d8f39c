"""LEGACY, for `lib_todo.bench.flux` only until the bench runs DiT blocks through `backends.dit`: diffusers' Flux
processors wrapped (`lib_todo.apply` now serves Flux through `backends.flux` and the DiT engine).

A pre-hook on the transformer reads, per forward, the text length (`encoder_hidden_states`) and the image grid
from `img_ids` (rows [0, row, col] of a row-major `h x w` grid, as the Flux pipelines pack latents). Each
double and single block's `FluxAttnProcessor` is wrapped: when ToDo acts, the wrapper computes q, k, v and
RoPE as the processor does and runs `joint_attention`; otherwise it calls the original processor untouched.
A sequence that is not text + h*w (Kontext's reference image, position ids ToDo cannot read) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..joint_attention import DEFAULT_BALANCE, joint_attention
from ..state import CLOSED_WINDOW, EXTRA_TOKENS, NO_GRID, OWN_CONTEXT, PassState

TAG = "_lib_todo_flux"
PROCESSOR_NAMES = ("FluxAttnProcessor", "FluxAttnProcessor2_0")


def is_flux_transformer(model: Any) -> bool:
    """diffusers' FluxTransformer2DModel (or a subclass): double and single blocks of joint attention."""
    return isinstance(model, nn.Module) and any(c.__name__ == "FluxTransformer2DModel" for c in type(model).__mro__)


@dataclass
class ForwardShape:
    """What the current forward of the transformer feeds its blocks: text length and image grid (or None)."""

    txt_len: int | None = None
    grid: tuple[int, int] | None = None
    why_none: str = NO_GRID  # why `grid` is None: no readable grid, or a grid followed by extra image tokens


class TodoFluxProcessor:
    """Wraps one block's FluxAttnProcessor; `original` is what `remove` puts back."""

    def __init__(self, original: Any, state: PassState, shape: ForwardShape, balance: bool) -> None:
        self.original = original
        self.state = state
        self.shape = shape
        self.balance = balance
        setattr(self, TAG, True)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        grid = self._grid_if_acting(hidden_states, encoder_hidden_states, attention_mask)
        if grid is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return self._todo(attn, hidden_states, encoder_hidden_states, image_rotary_emb, grid)

    def _grid_if_acting(
        self, hidden: torch.Tensor, encoder: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[tuple[int, int], float] | None:
        """(grid, factor) when this call is downsampled, else None (counted as skipped, and why)."""
        state, shape = self.state, self.shape
        if not state.active:
            state.skip(CLOSED_WINDOW)
            return None
        if mask is not None or getattr(self.original, "_parallel_config", None) is not None:
            state.skip(OWN_CONTEXT)  # a mask sized for the full sequence, or a sequence split across devices
            return None
        if shape.grid is None or shape.txt_len is None:
            state.skip(shape.why_none)
            return None
        n_img = shape.grid[0] * shape.grid[1]
        text = encoder.shape[1] if encoder is not None else hidden.shape[1] - n_img
        image = hidden.shape[1] if encoder is not None else n_img
        if text != shape.txt_len or image != n_img:
            state.skip(NO_GRID)  # extra tokens (Kontext, a reference image): left alone
            return None
        target = state.target(n_img, state.latent_hw)
        return None if target is None else ((target.h, target.w), target.factor)

    def _todo(self, attn: nn.Module, hidden: torch.Tensor, encoder: torch.Tensor | None, rope: Any, plan: tuple):
        grid, factor = plan
        q, k, v = joint_qkv(attn, hidden, encoder)  # (B, L, heads, D), text first
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = joint_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            self.shape.txt_len,
            grid,
            factor,
            self.state.settings.method,
            self.balance,
        )
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if encoder is None:
            return out
        text, image = out.split_with_sizes([encoder.shape[1], hidden.shape[1]], dim=1)
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())


def install(transformer: nn.Module, state: PassState, balance: bool = DEFAULT_BALANCE) -> list[Any]:
    """Wrap the Flux attention processors of `transformer` and hook its forward; returns removable handles."""
    shape = ForwardShape()
    handles: list[Any] = [
        transformer.register_forward_pre_hook(_tagged(_shape_hook(state, shape)), with_kwargs=True),
        transformer.register_forward_hook(_tagged(_forget_shape(shape)), always_call=True),
    ]
    swapped = []
    for attn in _flux_attention_modules(transformer):
        swapped.append((attn, attn.processor))
        attn.processor = TodoFluxProcessor(attn.processor, state, shape, balance)
    if swapped:
        handles.append(_ProcessorSwap(swapped))
    return handles


def remove_installed(transformer: nn.Module) -> int:
    """Undo whatever this backend installed in `transformer`, even without the handles; returns how many things."""
    removed = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        while getattr(processor, TAG, False):  # a wrapper of a wrapper, should one ever be left behind
            processor = module.processor = processor.original
            removed += 1
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key, fn in list(hooks.items()):
                if getattr(fn, TAG, False):
                    del hooks[key]
                    module._forward_pre_hooks_with_kwargs.pop(key, None)
                    module._forward_hooks_always_called.pop(key, None)
                    removed += 1
    return removed


def has_todo(transformer: nn.Module) -> bool:
    """Whether anything of this backend is installed in `transformer`."""
    for module in transformer.modules():
        if getattr(getattr(module, "processor", None), TAG, False):
            return True
        if any(
            getattr(fn, TAG, False) for fn in [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
        ):
            return True
    return False


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


def _grid_then_more(img_ids: Any) -> bool:
    """Whether the ids start with a row-major grid that more image tokens follow (Kontext's reference image:
    its ids carry another first coordinate)."""
    if not isinstance(img_ids, torch.Tensor) or img_ids.dim() not in (2, 3) or img_ids.shape[-1] < 3:
        return False
    ids = img_ids[0] if img_ids.dim() == 3 else img_ids
    lead = int((ids[:, 0] == ids[0, 0]).int().cumprod(0).sum().item())
    return 0 < lead < ids.shape[0] and image_grid(ids[:lead], lead) is not None


class _ProcessorSwap:
    """Puts the original processors back (only where ours is still the one installed)."""

    def __init__(self, swapped: list[tuple[nn.Module, Any]]) -> None:
        self._swapped = swapped

    def remove(self) -> None:
        for attn, original in self._swapped:
            if getattr(attn.processor, TAG, False) and attn.processor.original is original:
                attn.processor = original
        self._swapped = []


def _flux_attention_modules(transformer: nn.Module) -> list[nn.Module]:
    """The attention of every double and single block whose processor is diffusers' plain Flux one."""
    blocks = [*getattr(transformer, "transformer_blocks", []), *getattr(transformer, "single_transformer_blocks", [])]
    attns = [getattr(block, "attn", None) for block in blocks]
    return [a for a in attns if type(getattr(a, "processor", None)).__name__ in PROCESSOR_NAMES]


def _tagged(fn: Callable) -> Callable:
    setattr(fn, TAG, True)
    return fn


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _shape_hook(state: PassState, shape: ForwardShape) -> Callable:
    def record_shape(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = _arg(args, kwargs, 0, "hidden_states")
        encoder = _arg(args, kwargs, 1, "encoder_hidden_states")
        ok = isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and isinstance(encoder, torch.Tensor)
        shape.txt_len = int(encoder.shape[1]) if ok else None
        ids = _arg(args, kwargs, 4, "img_ids")
        shape.grid = image_grid(ids, int(hidden.shape[1])) if ok else None
        shape.why_none = EXTRA_TOKENS if ok and shape.grid is None and _grid_then_more(ids) else NO_GRID
        # The latent before the 2x2 patchify: the plan's level-1 grid of it is the image grid.
        state.latent_hw = None if shape.grid is None else (2 * shape.grid[0], 2 * shape.grid[1])

    return record_shape


def _forget_shape(shape: ForwardShape) -> Callable:
    def forget(module: nn.Module, args: tuple, output: Any) -> None:
        shape.txt_len = shape.grid = None
        shape.why_none = NO_GRID

    return forget


def joint_qkv(attn: Any, hidden: torch.Tensor, encoder: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """q, k, v of shape (B, L, heads, D) as FluxAttnProcessor builds them: RMS-normed q/k, text tokens first."""
    if getattr(attn, "fused_projections", False):
        q, k, v = attn.to_qkv(hidden).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)
    q, k, v = (x.unflatten(-1, (-1, attn.head_dim)) for x in (q, k, v))
    q, k = attn.norm_q(q), attn.norm_k(k)
    if encoder is None or attn.added_kv_proj_dim is None:
        return q, k, v
    if getattr(attn, "fused_projections", False):
        eq, ek, ev = attn.to_added_qkv(encoder).chunk(3, dim=-1)
    else:
        eq, ek, ev = attn.add_q_proj(encoder), attn.add_k_proj(encoder), attn.add_v_proj(encoder)
    eq, ek, ev = (x.unflatten(-1, (-1, attn.head_dim)) for x in (eq, ek, ev))
    eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
    return torch.cat([eq, q], dim=1), torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)


def apply_rope(x: torch.Tensor, rope: Any) -> torch.Tensor:
    from diffusers.models.embeddings import apply_rotary_emb  # diffusers is only needed when it is in use

    return apply_rotary_emb(x, rope, sequence_dim=1)
