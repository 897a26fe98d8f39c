"""ToDo on diffusers' real Wan transformers (WanTransformer3DModel text-to-video and image-to-video, and
WanVACETransformer3DModel; small configs, random weights), end to end through lib_todo.apply, against ToDo written
by hand (tests/dit_reference.py) in place of the original processors' `dispatch_attention_fn`. What every diffusers
family satisfies (factor 1, remove, an exception, auto, the step window, the table) is checked on the text-to-video
model in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import math

import pytest
import torch
from dit_diffusers_cases import I2V_IMAGE, I2V_TEXT, LAYERS, TXT, processors, run, run_by_hand, small_wan, wan_inputs
from dit_family_checks import HandKernel
from dit_reference import kept_keys

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, wan

transformer_wan = pytest.importorskip("diffusers.models.transformers.transformer_wan")


def grid_of(latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
    return latent_thw[0], latent_thw[1] // 2, latent_thw[2] // 2


def video_by_hand(grid: tuple[int, int, int], factor: int, balance: bool = True) -> HandKernel:
    """ToDo written out for the ORIGINAL processors: a call whose queries and keys are the video's tokens gets the
    kept keys (1 x f x f per frame) and their bias; every other call (attn2: text, CLIP image) goes to diffusers'
    own dispatch, recorded in the hand kernel's `left` as (query length, key length)."""
    n = math.prod(grid)
    return HandKernel(lambda length: 0 if length == n else None, grid, factor, balance)


def recording(monkeypatch) -> list[tuple[int, int]]:
    """diffusers' own dispatch, recording the (query length, key length) of every call that reaches it."""
    original = transformer_wan.dispatch_attention_fn
    calls: list[tuple[int, int]] = []

    def dispatch(query, key, value, *args, **kwargs):
        calls.append((query.shape[1], key.shape[1]))
        return original(query, key, value, *args, **kwargs)

    monkeypatch.setattr(transformer_wan, "dispatch_attention_fn", dispatch)
    return calls


@pytest.mark.parametrize(
    ("kind", "latent", "factor", "balance"),
    [
        ("t2v", (3, 8, 12), 2, "channel"),  # every cell full: the balance bias is a constant, left out
        ("t2v", (2, 10, 14), 2, "channel"),  # a 5 x 7 grid per frame: border cells, balance matters
        ("t2v", (2, 10, 14), 2, "mask"),
        ("t2v", (2, 10, 14), 2, "off"),
        ("t2v", (2, 12, 10), 3, "channel"),
        ("i2v", (2, 10, 14), 2, "channel"),
        ("vace", (2, 10, 14), 2, "channel"),
    ],
)
def test_todo_equals_the_original_processors_with_todo_written_by_hand(kind, latent, factor, balance):
    model = small_wan(kind)
    kwargs = wan_inputs(model, latent)
    before = processors(model)
    plain = run(model, kwargs)
    with lib_todo.patched(model, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(model, kwargs)
        assert not dit.installed_anywhere()  # the kernel is ToDo's only while a forward runs
    assert handle.applied == {1: float(factor)}
    assert handle.state.calls == LAYERS * (2 if kind == "vace" else 1) and handle.state.skipped == {}
    assert not dit_diffusers.has_todo(model)
    assert all(a is b for a, b in zip(processors(model), before, strict=True))
    hand = video_by_hand(grid_of(latent), factor, balance != "off")
    expected = run_by_hand(model, kwargs, transformer_wan, hand)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-2 * plain.abs().max()
    n = grid_of(latent)[0] * grid_of(latent)[1] * grid_of(latent)[2]
    per_block = [(n, I2V_IMAGE), (n, I2V_TEXT)] if kind == "i2v" else [(n, TXT)]  # attn2: CLIP image, then text
    assert hand.left == per_block * (LAYERS * (2 if kind == "vace" else 1))
    assert hand.todo == LAYERS * (2 if kind == "vace" else 1)


def test_cross_attention_reaches_diffusers_dispatch_untouched(monkeypatch):
    """Recorded at diffusers' own dispatch under ToDo: attn2's two calls per block (CLIP image, then text) come
    with their whole context, as without ToDo; attn1's come with one key per 2 x 2 cell of each of the 3 frames
    (a 4 x 6 grid per frame: 6 keys each)."""
    model = small_wan("i2v")
    kwargs = wan_inputs(model, (3, 8, 12), batch=1)
    calls = recording(monkeypatch)
    run(model, kwargs)
    plain_calls = list(calls)
    calls.clear()
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        run(model, kwargs)
    n = 3 * 4 * 6
    assert plain_calls == [(n, n), (n, I2V_IMAGE), (n, I2V_TEXT)] * LAYERS  # attn1, then attn2: image, text
    assert calls == [(n, 3 * 6), (n, I2V_IMAGE), (n, I2V_TEXT)] * LAYERS
    assert handle.state.calls == LAYERS


def test_kept_keys_are_chosen_within_each_frame(monkeypatch):
    """The first block's attn1 sees the same q, k, v with or without ToDo: the keys ToDo hands the kernel are the
    full keys at the centre token of each 1 x 2 x 2 cell, frame by frame."""
    model = small_wan("t2v")
    kwargs = wan_inputs(model, (3, 6, 10), batch=1)
    original = transformer_wan.dispatch_attention_fn
    keys: list[torch.Tensor] = []

    def dispatch(query, key, value, *args, **kw):
        if key.shape[1] == query.shape[1] or key.shape[1] < query.shape[1] // 2:
            keys.append(key)
        return original(query, key, value, *args, **kw)

    monkeypatch.setattr(transformer_wan, "dispatch_attention_fn", dispatch)
    run(model, kwargs)
    full = keys[0]
    keys.clear()
    with lib_todo.patched(model, TodoSettings(factor=2), balance="off"):
        run(model, kwargs)
    keep, _ = kept_keys(0, (3, 3, 5), 2, 45)
    assert keys[0].shape[1] == 3 * 2 * 3
    torch.testing.assert_close(keys[0], full[:, keep])
    frames = [i // 15 for i in keep]
    assert frames == sorted(frames) and [frames.count(f) for f in range(3)] == [6, 6, 6]


def test_two_experts_of_a_wan_2_2_pipeline_share_one_state():
    class Pipeline:  # what WanPipeline (Wan 2.2 A14B) looks like to apply(): two experts
        pass

    pipe = Pipeline()
    pipe.transformer, pipe.transformer_2 = small_wan("t2v", seed=0), small_wan("t2v", seed=3)
    kwargs = wan_inputs(pipe.transformer, (2, 10, 14))
    handle = lib_todo.apply(pipe, TodoSettings(factor=2))
    try:
        assert dit_diffusers.has_todo(pipe.transformer) and dit_diffusers.has_todo(pipe.transformer_2)
        high, low = run(pipe.transformer, kwargs), run(pipe.transformer_2, kwargs)
        assert handle.state.calls == 2 * LAYERS and handle.applied == {1: 2.0}
    finally:
        assert lib_todo.remove(pipe) == 4  # a pre-hook and a forward hook on each expert
    handle.remove()
    assert not dit_diffusers.has_todo(pipe.transformer) and not dit_diffusers.has_todo(pipe.transformer_2)
    hand = video_by_hand((2, 5, 7), 2)
    torch.testing.assert_close(high, run_by_hand(pipe.transformer, kwargs, transformer_wan, hand), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        low, run_by_hand(pipe.transformer_2, kwargs, transformer_wan, hand), atol=1e-5, rtol=1e-4
    )


def test_a_block_with_another_processor_is_left_alone():
    model = small_wan("t2v")

    class Custom:  # e.g. a caching or IP-Adapter-like processor: ToDo does not know its keys
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            return transformer_wan.WanAttnProcessor()(attn, hidden_states, encoder_hidden_states, None, rotary_emb)

    model.blocks[0].attn1.processor = Custom()
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        run(model, wan_inputs(model, (2, 10, 14)))
    assert handle.state.calls == LAYERS - 1


def test_the_families_by_model():
    """t2v: the shared invariants; VACE: the same family; TI2V-5B: its own (32 px per token); not Neo's."""
    assert dit_family(small_wan("vace"), "diffusers") is wan.DIFFUSERS_WAN
    five_b = small_wan("t2v", in_channels=48, out_channels=48)  # TI2V-5B: a /16 latent of 48 channels
    assert dit_family(five_b, "diffusers") is wan.DIFFUSERS_WAN_5B
    assert dit_family(small_wan("t2v"), "forge") is None


@pytest.mark.parametrize(
    ("width", "height", "factor"),
    [(832, 480, 1), (1280, 720, 1), (1920, 1072, 1), (1920, 1088, 2), (2560, 1440, 2), (3840, 2160, 3)],
)
def test_auto_by_frame_size_against_720p(width, height, factor):
    """Native 960 px (sqrt(1280 * 720)): off up to 720p, 2 from a frame's geometric-mean side of ~1440 px; a
    token is 16 px (the frame count does not enter)."""
    grid = (height // 8 // 2, width // 8 // 2)
    assert lib_todo.auto_factors(grid, wan.DIFFUSERS_WAN.layout()) == (factor, 1)
    assert lib_todo.auto_factors(grid, wan.FORGE_WAN.layout()) == (factor, 1)
    five_b = (height // 16 // 2, width // 16 // 2)  # TI2V-5B: 32 px per token, the same rule in pixels
    assert lib_todo.auto_factors(five_b, wan.DIFFUSERS_WAN_5B.layout()) == (factor, 1)
