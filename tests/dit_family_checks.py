"""What the Anima, Ernie-Image and Krea 2 family tests share: ToDo written by hand (tests/dit_reference.py) in place
of a host's own kernel, by the host's calling convention, and random weights everywhere.

A hand kernel knows its model: `starts(length)` gives the index where the target image starts among keys of that
length (the test knows its model's joint / image-only lengths), or None for a call it must leave to the host's
kernel (cross-attention, text-only attention). It counts both kinds of call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from dit_reference import attention_by_hand, kept_keys

STUB = Path(__file__).resolve().parent / "webui_stub"


def randomise(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn anew (no zero-initialised gate or projection may hide attention from the output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


class HandKernel:
    """ToDo by hand on (B, heads, L, D) for the calls `starts` knows, with (or without) the balance bias."""

    def __init__(self, starts: Callable[[int], int | None], grid: tuple[int, int, int], factor: int, balance=True):
        self.starts, self.grid, self.factor, self.balance = starts, grid, factor, balance
        self.todo = 0  # calls done by hand
        self.host = 0  # calls left to the host's kernel

    def __call__(self, q, k, v, mask=None, scale=None) -> torch.Tensor | None:
        start = self.starts(k.shape[2]) if k.shape[2] == q.shape[2] else None
        if start is None:
            self.host += 1
            return None
        self.todo += 1
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

    def forge(self, original: Callable) -> Callable:
        """Neo's `attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
        skip_output_reshape=False, **kwargs)`."""

        def attention_function(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, **kwargs):
            split = (q, k, v) if skip_reshape else (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
            out = self(*split, mask)
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
    """tests/webui_stub importable (the `stub_dit` stand-ins, `stub_models`' patcher) within; forgotten after."""
    sys.path.insert(0, str(STUB))
    try:
        import stub_dit.neo_parts

        yield stub_dit.neo_parts
    finally:
        sys.path.remove(str(STUB))
        for name in [n for n in sys.modules if n.split(".")[0] in ("stub_dit", "stub_models")]:
            del sys.modules[name]
