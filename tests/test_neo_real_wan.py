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
from dit_family_checks import HandKernel, neo_stand_ins
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, dit_family, wan
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TEXT, HEADS, DIM, CLIP_TOKENS = 5, 2, 32, 3


@pytest.fixture(scope="module")
def neo_wan():
    return neo_module("wan")


def tiny_wan(module, model_type: str = "t2v", layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.WanModel(
        model_type=model_type, patch_size=(1, 2, 2), in_dim=8 if model_type == "i2v" else 4, dim=DIM, ffn_dim=32,
        freq_dim=16, text_dim=12, out_dim=4, num_heads=HEADS, num_layers=layers,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in network.parameters():  # Neo builds the modulations with torch.empty
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return network.eval()


def model_call(network, latent_thw, **conds):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, *latent_thw, generator=g)
    c = {"c_crossattn": torch.randn(2, TEXT, 12, generator=g), **conds}

    def apply_model(x, t, c_crossattn, transformer_options=None, **extra):
        return network(x, t, context=c_crossattn, transformer_options=transformer_options or {}, **extra)

    return apply_model, {"input": x, "timestep": torch.tensor([300.0, 700.0]), "c": c}


def run_plain(apply_model, args):
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"])


def run_with_todo(network, settings, apply_model, args, balance="channel", previous=None):
    state = PassState(TodoPlan(settings, wan.FORGE_WAN.layout()))
    wrapper = DitCallWrapper(state, dit.installation(wan.FORGE_WAN, network), previous, balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def by_hand(grid, factor, extra=0) -> HandKernel:
    """ToDo written out for Neo's attention_function on calls over the video's tokens (+ `extra` after them); every
    other call goes to Neo's own, its (query length, key length) recorded in `left`."""
    n = math.prod(grid) + extra
    return HandKernel(lambda length: 0 if length == n else None, grid, factor)


def run_by_hand(module, monkeypatch, apply_model, args, hand):
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function))
    try:
        return run_plain(apply_model, args)
    finally:
        monkeypatch.undo()


def grid_of(latent_thw):
    return latent_thw[0], -(-latent_thw[1] // 2), -(-latent_thw[2] // 2)


@pytest.mark.parametrize(("latent", "factor"), [((3, 8, 12), 2), ((2, 9, 13), 2), ((2, 12, 10), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_wan_t2v_equals_todo_by_hand(neo_wan, monkeypatch, latent, factor, balance):
    network = tiny_wan(neo_wan)
    apply_model, args = model_call(network, latent)
    plain = run_plain(apply_model, args)
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    assert not dit.installed_anywhere()
    hand = by_hand(grid_of(latent), factor)
    expected = run_by_hand(neo_wan, monkeypatch, apply_model, args, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2 * plain.abs().max()
    assert state.calls == 2 and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == 2 and hand.left == [(math.prod(grid_of(latent)), TEXT)] * 2  # cross-attention: Neo's


def test_neo_wan_i2v_keeps_both_cross_attentions_untouched(neo_wan, monkeypatch):
    network = tiny_wan(neo_wan, "i2v")
    args_module = sys.modules["backend.args"]
    concat = torch.randn(1, 4, 2, 10, 14, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(args_module.dynamic_args, "concat_latent", concat, raising=False)
    clip = torch.randn(2, CLIP_TOKENS, 1280, generator=torch.Generator().manual_seed(4))
    apply_model, args = model_call(network, (2, 10, 14), clip_fea=clip)
    original = neo_wan.attention_function
    seen: list[tuple[int, int]] = []

    def recording(q, k, v, heads, **kwargs):
        seen.append((q.shape[1], k.shape[1]))
        return original(q, k, v, heads, **kwargs)

    monkeypatch.setattr(neo_wan, "attention_function", recording)  # ToDo hands it every call it leaves alone
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args)
    monkeypatch.setattr(neo_wan, "attention_function", original)
    n = 2 * 5 * 7
    assert seen == [(n, 2 * 3 * 4), (n, CLIP_TOKENS), (n, TEXT)] * 2  # self (downsampled), image, text
    hand = by_hand((2, 5, 7), 2)
    monkeypatch.setattr(neo_wan, "attention_function", hand.forge(original))
    expected = run_plain(apply_model, args)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert hand.left == [(n, CLIP_TOKENS), (n, TEXT)] * 2 and state.calls == 2


def test_neo_wan_frames_concatenated_along_time_are_kept_whole(neo_wan, monkeypatch):
    network = tiny_wan(neo_wan)
    appended = torch.randn(2, 4, 1, 10, 14, generator=torch.Generator().manual_seed(5))
    apply_model, args = model_call(network, (2, 10, 14), time_dim_concat=appended)
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args)
    hand = by_hand((2, 5, 7), 2, extra=5 * 7)
    expected = run_by_hand(neo_wan, monkeypatch, apply_model, args, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 2 and hand.todo == 2


def test_neo_wan_with_radial_attention_replacing_wan_attention(neo_wan, monkeypatch):
    """Radial Attention's wrapper (set before ToDo's, as its built-in script runs first) puts its own kernel in
    `wan.attention` per call; in its sparse blocks that kernel takes the call and ToDo is never reached; the dense
    block 0 gets ToDo."""
    with neo_stand_ins():
        from stub_dit.wan import radial_like_wrapper
    network = tiny_wan(neo_wan, layers=3)
    apply_model, args = model_call(network, (2, 10, 14))
    radial_calls: list[int] = []
    radial = radial_like_wrapper(neo_wan, dense_block=1, calls=radial_calls)
    monkeypatch.setattr(neo_wan, "attention", neo_wan.attention)  # put back after the test, as Radial does not
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args, previous=radial)
    assert radial_calls == [1, 2] and state.calls == 1 and state.skipped == {"other kernel": 2}
    hand = by_hand((2, 5, 7), 2)
    monkeypatch.setattr(neo_wan, "attention_function", hand.forge(neo_wan.attention_function))
    with torch.no_grad():
        expected = radial(apply_model, args)  # Radial alone, ToDo by hand in its dense block
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert hand.todo == 1 and not dit.installed_anywhere()


def test_neo_wan_factor_one_installs_nothing(neo_wan):
    network = tiny_wan(neo_wan)
    apply_model, args = model_call(network, (2, 10, 14))
    plain = run_plain(apply_model, args)
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0


def test_neo_wan_is_recognised(neo_wan):
    assert dit_family(tiny_wan(neo_wan), "forge") is wan.FORGE_WAN
