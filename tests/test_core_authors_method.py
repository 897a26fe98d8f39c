"""The authors' ToDo, stated in our words, against lib_todo's `nearest` on diffusers' real SD1.5 UNet.

Their demo (SD1.5, factor 2 / 3 / 4 at 1024 / 1536 / 2048 px, level 2 off) computes, in every self-attention of
the first level, keys and values from F.interpolate(mode="nearest") of the normalized hidden states on the
`h x w` latent grid to `h/f x w/f`, and leaves every other self-attention whole. The reference below writes
that out as an attention processor of its own (queries from every token, SDPA), the way their code plugs in;
our hooks with method "nearest" must give the same UNet output bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import core_helpers as ch
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lib_todo

NAME = "sd15"
LATENT = 24  # the level-1 grid; divisible by 2, 3 and 4, as the authors' sizes are (their sizes round down)


class NearestKeysProcessor:
    """Self-attention with keys/values from F.interpolate(mode="nearest") of the tokens, on one grid only."""

    def __init__(self, h: int, w: int, factor: int) -> None:
        self.h, self.w, self.factor = h, w, factor

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        x = hidden_states  # (B, N, C), already normalized by the block
        kv = x
        if x.shape[1] == self.h * self.w:
            kv = ch.interpolate_tokens(x, self.h, self.w, (self.h // self.factor, self.w // self.factor), "nearest")
        q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
        b, heads = x.shape[0], attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, heads * d) -> (B, heads, N, d)
            return t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.transpose(1, 2).reshape(b, -1, q.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def authors_reference(unet: nn.Module, factor: int) -> Iterator[None]:
    """Every attn1 runs NearestKeysProcessor for the level-1 grid; the original processors come back after."""
    attns = ch.attn1_modules(unet)
    saved = [a.processor for a in attns]
    for a in attns:
        a.set_processor(NearestKeysProcessor(LATENT, LATENT, factor))
    try:
        yield
    finally:
        for a, processor in zip(attns, saved, strict=True):
            a.set_processor(processor)


@pytest.fixture(scope="module")
def sd15():
    unet = ch.build(NAME)
    return unet, ch.inputs(unet, NAME, LATENT, LATENT)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_nearest_unet_equals_the_authors_semantics_bit_for_bit(sd15, factor):
    unet, (args, kwargs) = sd15
    baseline = ch.run(unet, args, kwargs)
    with authors_reference(unet, factor):
        reference = ch.run(unet, args, kwargs)
    settings = lib_todo.TodoSettings(factor=factor, factor_level2=1, method="nearest")
    with lib_todo.patched(unet, settings) as todo:
        ours = ch.run(unet, args, kwargs)
        assert todo.applied == {1: float(factor)}
    ch.assert_no_hooks(unet)
    assert not torch.equal(reference, baseline)  # the reference really downsampled
    assert torch.equal(ours, reference)
    with lib_todo.patched(unet, lib_todo.TodoSettings(factor=factor, factor_level2=1, method="nearest-exact")):
        assert not torch.equal(ch.run(unet, args, kwargs), reference)  # the other token is another method
