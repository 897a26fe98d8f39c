"""What the DiT family tests share (diffusers, the Neo stand-ins, Neo's real code): ToDo written by hand
(tests/dit_reference.py) in place of a host's own kernel, by the host's calling convention (`HandKernel`); a
kernel swapped for a while; random weights everywhere; the Neo stand-ins importable for a while, one model call
of a stand-in (`StandInCall`) and what factor 1 and an exception must leave on one.

A hand kernel knows its model: `starts(length)` gives the index where the target image starts among keys of that
length (the test knows its model's joint / image-only lengths), or None for a call it must leave to the host's
kernel (cross-attention, text-only attention). It records both kinds of call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from dit_reference import attention_by_hand, kept_keys

from lib_todo.backends import dit, dit_family, patch_forge_patcher
from lib_todo.backends.dit_forge import patch_dit_patcher
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

STUB = Path(__file__).resolve().parent / "webui_stub"
Starts = int | list[int] | None  # where the image starts among a call's keys (per item), or None: not by hand


def randomise(model: torch.nn.Module, std: float = 0.2, seed: int = 0, norms_around_one: bool = False):
    """Every parameter drawn anew (no zero-initialised gate or projection may hide attention from the output, and
    Neo builds some with torch.empty); with `norms_around_one`, norm scales (1-D, named *norm*) around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
            if norms_around_one and "norm" in name and p.dim() == 1:
                p += 1.0
    return model.eval()


class HandKernel:
    """ToDo by hand (tests/dit_reference.py) on (B, heads, L, D) q, k, v for the calls `starts` knows, with (or
    without) the balance bias; every call recorded.

    `starts(key length)` is the index where the target image starts among keys of that length, a list of them (one
    per item: captions of different length before the image), or None; only calls with as many queries as keys
    (self / joint attention) are asked. A call it answers None is left to the host's kernel (cross-attention,
    text-only attention). `dispatch`, `forge` and `sdpa` wrap it in a host's kernel signature.
    """

    def __init__(self, starts: Callable[[int], Starts], grid: tuple[int, int, int], factor: int, balance=True):
        self.starts, self.grid, self.factor, self.balance = starts, grid, factor, balance
        self.keys: list[int] = []  # key length of each call done by hand
        self.masked: list[bool] = []  # whether each call done by hand came with a mask
        self.left: list[tuple[int, int]] = []  # (query length, key length) of each call left to the host's kernel

    @property
    def todo(self) -> int:
        """Calls done by hand."""
        return len(self.keys)

    @property
    def host(self) -> int:
        """Calls left to the host's kernel."""
        return len(self.left)

    def __call__(self, q, k, v, mask=None, scale=None) -> torch.Tensor | None:
        length = k.shape[2]
        start = self.starts(length) if length == q.shape[2] else None
        if start is None:
            self.left.append((q.shape[2], length))
            return None
        self.keys.append(length)
        self.masked.append(mask is not None)
        if isinstance(start, int):
            return self._item(q, k, v, start, mask, scale)
        items = [mask if mask is None or mask.shape[0] == 1 else mask[b : b + 1] for b in range(len(start))]
        parts = [self._item(q[b : b + 1], k[b : b + 1], v[b : b + 1], s, items[b], scale) for b, s in enumerate(start)]
        return torch.cat(parts)

    def _item(self, q, k, v, start: int, mask, scale) -> torch.Tensor:
        keep, bias = kept_keys(start, self.grid, self.factor, k.shape[2])
        return attention_by_hand(q, k, v, keep, bias if self.balance else [0.0] * len(bias), scale, mask)

    def dispatch(self, original: Callable) -> Callable:
        """diffusers' `dispatch_attention_fn(query, key, value, attn_mask=None, ...)`, (B, L, heads, D)."""

        def dispatch_attention_fn(query, key, value, attn_mask=None, **kwargs):
            out = self(*(t.transpose(1, 2) for t in (query, key, value)), attn_mask, kwargs.get("scale"))
            if out is None:
                return original(query, key, value, attn_mask=attn_mask, **kwargs)
            return out.transpose(1, 2)

        return dispatch_attention_fn

    def sdpa(self, original: Callable) -> Callable:
        """torch's `scaled_dot_product_attention(query, key, value, attn_mask=None, ..., scale=None)`, (B, heads,
        L, D), as a processor that calls `F.scaled_dot_product_attention` itself (diffusers' Lumina 2)."""

        def scaled_dot_product_attention(query, key, value, attn_mask=None, scale=None, **kwargs):
            out = self(query, key, value, attn_mask, scale)
            return original(query, key, value, attn_mask=attn_mask, scale=scale, **kwargs) if out is None else out

        return scaled_dot_product_attention

    def forge(self, original: Callable, split: bool | None = None) -> Callable:
        """Neo's `attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
        skip_output_reshape=False, **kwargs)`; `split`: that every call must come as (B, heads, L, D) with
        `skip_reshape` (True) or as (B, L, heads*D) without (False), as the model at hand hands it."""

        def attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, **kwargs):
            if split is not None:
                assert skip_reshape == split and q.dim() == (4 if split else 3), "not the layout this model hands"
            parts = (q, k, v) if skip_reshape else (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
            out = self(*parts, mask)
            if out is None:
                return original(q, k, v, heads, mask, attn_precision, skip_reshape, **kwargs)
            return out if kwargs.get("skip_output_reshape") else out.transpose(1, 2).flatten(2)

        return attention_function


@contextmanager
def kernel_replaced(module: Any, name: str, replacement: Callable) -> Iterator[None]:
    """`module.<name>` is `replacement` within, the original after (also on errors)."""
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextmanager
def neo_stand_ins() -> Iterator[Any]:
    """tests/webui_stub importable (the `stub_dit` stand-ins, the `stub_flux` kernel they share, `stub_models`'
    patcher) within; forgotten after."""
    sys.path.insert(0, str(STUB))
    try:
        import stub_dit.neo_parts

        yield stub_dit.neo_parts
    finally:
        sys.path.remove(str(STUB))
        for name in [n for n in sys.modules if n.split(".")[0] in ("stub_dit", "stub_flux", "stub_models")]:
            del sys.modules[name]


class StandInCall:
    """One model call of a Neo stand-in network (tests/webui_stub/stub_dit) through Neo's UNet patcher, as Neo's
    sampling function makes it: plain, through ToDo as the webui installs it, or with ToDo by hand in place of the
    stand-in module's `attention_function`. `parts` is stub_dit.neo_parts, `stub` the stand-in's module."""

    def __init__(self, parts: Any, stub: Any, network: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, c: dict):
        self.parts, self.stub, self.network = parts, stub, network
        self.patcher = parts.neo_patcher(network)
        self.call = (x, t, c)

    def run(self, patcher: Any = None) -> torch.Tensor:
        """The call through `patcher` (default: the one without ToDo)."""
        with torch.no_grad():
            return self.parts.call_patcher(patcher or self.patcher, *self.call)

    def with_todo(self, settings: TodoSettings, balance: str = "channel") -> tuple[torch.Tensor, PassState]:
        """(output, pass state) through a clone with ToDo: patch_forge_patcher's (the balance bias in a channel),
        or the family's wrapper with `balance` ("mask": in an SDPA mask)."""
        if balance == "channel":
            clone, state = patch_forge_patcher(self.patcher, settings)
        else:
            clone, state = patch_dit_patcher(self.patcher, dit_family(self.network, "forge"), settings, balance=balance)
        return self.run(clone), state

    def by_hand(self, hand: HandKernel, module: Any = None, split: bool | None = None) -> torch.Tensor:
        """The call without ToDo, the `attention_function` of `module` (default: the stand-in's) doing ToDo by hand
        where `hand` knows the call (`split`: see HandKernel.forge)."""
        module = module or self.stub
        with kernel_replaced(module, "attention_function", hand.forge(module.attention_function, split)):
            return self.run()


def factor_one_and_an_exception_leave_nothing(call: StandInCall, failing_block: torch.nn.Module) -> None:
    """Factor 1: no wrapper on the clone, bit-identical, nothing counted. Factor 2 with `failing_block` (the second
    block) raising: ToDo's kernel was in place, the first block was served, and then the stand-in's kernel is Neo's
    own again and nothing of ToDo is installed."""
    plain = call.run()
    clone, state = patch_forge_patcher(call.patcher, TodoSettings(factor=1))
    assert "model_function_wrapper" not in clone.model_options
    assert torch.equal(call.run(clone), plain) and state.calls == 0
    clone, state = patch_forge_patcher(call.patcher, TodoSettings(factor=2))
    in_place = []

    def fail(module, args):
        in_place.append(call.stub.attention_function is not call.parts.attention_function)  # ToDo's, mid-call
        raise RuntimeError("stop")

    hook = failing_block.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="stop"):
            call.run(clone)
    finally:
        hook.remove()
    assert in_place == [True] and state.calls == 1
    assert call.stub.attention_function is call.parts.attention_function and not dit.installed_anywhere()


# NextDiT (Lumina 2, Z-Image): the stand-in and Neo's real network, run alike

NEXTDIT_RUNS = [  # (config, latent (h, w), factor, balance)
    ("lumina", (12, 16), 2, "channel"),
    ("lumina", (13, 15), 2, "mask"),
    ("lumina", (12, 18), 3, "channel"),
    ("z-image", (12, 16), 2, "channel"),
    ("z-image", (13, 15), 2, "mask"),
    ("z-image", (12, 18), 3, "channel"),
]


def nextdit_key_layouts(latent_hw: tuple[int, int], caption: int, pad_multiple: int | None):
    """NextDiT's token grid (2 x 2 patch, odd sides padded up) and {key length: image start} of its noise refiners
    ([image, pads]) and main layers ([caption + pads, image, pads]), tokens padded to `pad_multiple` (Z-Image: 32;
    None: not padded); the context refiners' caption-only length differs from both, so a hand kernel on these
    layouts leaves those calls to the host's kernel."""
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    multiple = pad_multiple or 1
    caption = -(-caption // multiple) * multiple
    image = -(-grid[1] * grid[2] // multiple) * multiple
    layouts = {image: 0, caption + image: caption}
    assert caption not in layouts
    return grid, layouts
