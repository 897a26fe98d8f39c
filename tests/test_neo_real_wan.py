"""Opt-in: ToDo on Forge Neo's REAL Wan code (backend/nn/wan.py `WanModel`, tiny configs, random weights), through
the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in
place of Neo's own `attention_function`: text-to-video, image-to-video (the image latent concatenated along
channels from Neo's `dynamic_args.concat_latent`, CLIP image tokens in the cross-attention), frames concatenated
along time, and Radial Attention's way of replacing `wan.attention` per call. See tests/neo_host.py to run it."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, requires_neo, tiny

from lib_todo.backends import dit, dit_family, wan
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
CLIP_TOKENS = 3


@pytest.fixture(scope="module")
def neo_wan():
    return neo_module("wan")


def tiny_wan(module, model_type: str = "t2v", layers: int = 2) -> torch.nn.Module:
    """Neo builds the modulations with torch.empty: all drawn anew."""
    return tiny(
        module.WanModel, seed=1, model_type=model_type, patch_size=(1, 2, 2), in_dim=8 if model_type == "i2v" else 4,
        dim=32, ffn_dim=32, freq_dim=16, text_dim=12, out_dim=4, num_heads=2, num_layers=layers,
    )  # fmt: skip


def wan_call(network, latent_thw, **conds):
    return neo_call(network, (4, *latent_thw), 12, timestep=(300.0, 700.0), **conds)


def by_hand(grid, factor, extra=0) -> HandKernel:
    """ToDo written out for Neo's attention_function on calls over the video's tokens (+ `extra` after them); every
    other call goes to Neo's own, its (query length, key length) recorded in `left`."""
    n = math.prod(grid) + extra
    return HandKernel(lambda length: 0 if length == n else None, grid, factor)


def grid_of(latent_thw):
    return latent_thw[0], -(-latent_thw[1] // 2), -(-latent_thw[2] // 2)


@pytest.mark.parametrize(("latent", "factor"), [((3, 8, 12), 2), ((2, 9, 13), 2), ((2, 12, 10), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_wan_t2v_equals_todo_by_hand(neo_wan, latent, factor, balance):
    call = wan_call(tiny_wan(neo_wan), latent)
    plain = call.plain()
    got, state = call.with_todo(wan.FORGE_WAN, TodoSettings(factor=factor), balance)
    assert not dit.installed_anywhere()
    hand = by_hand(grid_of(latent), factor)
    expected = call.by_hand(neo_wan, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2 * plain.abs().max()
    assert state.calls == 2 and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == 2 and hand.left == [(math.prod(grid_of(latent)), TXT)] * 2  # cross-attention: Neo's


def test_neo_wan_i2v_keeps_both_cross_attentions_untouched(neo_wan, monkeypatch):
    args_module = sys.modules["backend.args"]
    concat = torch.randn(1, 4, 2, 10, 14, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(args_module.dynamic_args, "concat_latent", concat, raising=False)
    clip = torch.randn(2, CLIP_TOKENS, 1280, generator=torch.Generator().manual_seed(4))
    call = wan_call(tiny_wan(neo_wan, "i2v"), (2, 10, 14), clip_fea=clip)
    original = neo_wan.attention_function
    seen: list[tuple[int, int]] = []

    def recording(q, k, v, heads, **kwargs):
        seen.append((q.shape[1], k.shape[1]))
        return original(q, k, v, heads, **kwargs)

    with kernel_replaced(neo_wan, "attention_function", recording):  # ToDo hands it every call it leaves alone
        got, state = call.with_todo(wan.FORGE_WAN, TodoSettings(factor=2))
    n = 2 * 5 * 7
    assert seen == [(n, 2 * 3 * 4), (n, CLIP_TOKENS), (n, TXT)] * 2  # self (downsampled), image, text
    hand = by_hand((2, 5, 7), 2)
    expected = call.by_hand(neo_wan, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert hand.left == [(n, CLIP_TOKENS), (n, TXT)] * 2 and state.calls == 2


def test_neo_wan_frames_concatenated_along_time_are_kept_whole(neo_wan):
    appended = torch.randn(2, 4, 1, 10, 14, generator=torch.Generator().manual_seed(5))
    call = wan_call(tiny_wan(neo_wan), (2, 10, 14), time_dim_concat=appended)
    got, state = call.with_todo(wan.FORGE_WAN, TodoSettings(factor=2))
    hand = by_hand((2, 5, 7), 2, extra=5 * 7)
    expected = call.by_hand(neo_wan, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 2 and hand.todo == 2


def test_neo_wan_with_radial_attention_replacing_wan_attention(neo_wan, monkeypatch):
    """Radial Attention's wrapper (set before ToDo's, as its built-in script runs first) puts its own kernel in
    `wan.attention` per call; in its sparse blocks that kernel takes the call and ToDo is never reached; the dense
    block 0 gets ToDo."""
    with neo_stand_ins():
        from stub_dit.wan import radial_like_wrapper
    call = wan_call(tiny_wan(neo_wan, layers=3), (2, 10, 14))
    radial_calls: list[int] = []
    radial = radial_like_wrapper(neo_wan, dense_block=1, calls=radial_calls)
    monkeypatch.setattr(neo_wan, "attention", neo_wan.attention)  # put back after the test, as Radial does not
    got, state = call.with_todo(wan.FORGE_WAN, TodoSettings(factor=2), previous=radial)
    assert radial_calls == [1, 2] and state.calls == 1 and state.skipped == {"other kernel": 2}
    hand = by_hand((2, 5, 7), 2)
    with kernel_replaced(neo_wan, "attention_function", hand.forge(neo_wan.attention_function)), torch.no_grad():
        expected = radial(call.apply_model, call.args)  # Radial alone, ToDo by hand in its dense block
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert hand.todo == 1 and not dit.installed_anywhere()


def test_neo_wan_factor_one_installs_nothing(neo_wan):
    factor_one_installs_nothing(wan_call(tiny_wan(neo_wan), (2, 10, 14)), wan.FORGE_WAN)


def test_neo_wan_is_recognised(neo_wan):
    assert dit_family(tiny_wan(neo_wan), "forge") is wan.FORGE_WAN
