"""ToDo on Wan in Forge Neo: the DiT engine with the Wan family (lib_todo.backends.wan), installed by
`patch_forge_patcher` on a Neo UNet patcher, against the stand-in of Neo's WanModel (tests/webui_stub/stub_dit/
wan.py) with ToDo written by hand (tests/dit_reference.py) in place of its `attention_function`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins, randomise

from lib_todo.backends import dit, dit_family, forge_unsupported_reason, patch_forge_patcher, wan
from lib_todo.settings import TodoSettings
from lib_todo.state import NEVER_CALLED, OTHER_KERNEL

TEXT, IMAGE = 5, 3  # text tokens; CLIP image tokens (Wan 2.1 i2v)


@pytest.fixture
def neo() -> Iterator[Any]:
    """The Wan stand-in module (and stub_models for the patcher), importable for one test, then forgotten."""
    with neo_stand_ins():
        from stub_dit import wan as stand_in

        yield stand_in


def network(neo: Any, model_type: str = "t2v", layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(neo.WanModel(model_type, in_dim=8 if model_type == "i2v" else 4, num_layers=layers))


def model_args(latent_thw: tuple[int, int, int], batch: int = 2, **conds: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(batch, 4, *latent_thw, generator=g)
    c = {"c_crossattn": torch.randn(batch, TEXT, 12, generator=g), "transformer_options": {}, **conds}
    return {"input": x, "timestep": torch.tensor([0.3, 0.8][:batch]), "c": c}


def call(neo: Any, patcher: Any, args: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return neo.call_patcher(patcher, args["input"], args["timestep"], dict(args["c"], transformer_options={}))


def grid_of(latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
    return latent_thw[0], -(-latent_thw[1] // 2), -(-latent_thw[2] // 2)


def by_hand(neo: Any, patcher: Any, args: dict[str, Any], grid, factor: int, extra: int = 0) -> tuple:
    """The model without ToDo, its `attention_function` doing ToDo by hand on every call over the video's tokens
    (and `extra` tokens after them), every other call on the stand-in's own kernel: (output, the hand kernel)."""
    n = grid[0] * grid[1] * grid[2] + extra
    kernel = HandKernel(lambda length: 0 if length == n else None, grid, factor)
    with kernel_replaced(neo, "attention_function", kernel.forge(neo.attention_function)):
        return call(neo, patcher, args), kernel


@pytest.mark.parametrize(
    ("latent", "factor", "balance"),
    [
        ((3, 8, 12), 2, "channel"),  # every cell full: the balance bias is a constant, left out
        ((2, 9, 13), 2, "channel"),  # odd sides padded up to the patch: a 5 x 7 grid, border cells
        ((2, 9, 13), 2, "mask"),
        ((2, 12, 10), 3, "channel"),
    ],
)
def test_text_to_video_equals_todo_by_hand_in_every_block(neo, latent, factor, balance):
    model = network(neo)
    patcher = neo.neo_patcher(model)
    args = model_args(latent)
    plain = call(neo, patcher, args)
    original = neo.attention_function
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=factor))
    if balance != "channel":
        clone.model_options["model_function_wrapper"].balance = balance
    got = call(neo, clone, args)
    assert neo.attention_function is original and not dit.installed_anywhere()
    expected, kernel = by_hand(neo, patcher, args, grid_of(latent), factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2 * plain.abs().max()
    assert state.calls == len(model.blocks) and state.applied == {1: float(factor)} and state.skipped == {}
    assert kernel.todo == kernel.host == len(model.blocks)  # self-attention by hand, cross-attention Neo's


def test_image_to_video_keeps_both_cross_attentions_untouched(neo):
    """i2v: the image latent and mask concatenated along channels (Neo's global), CLIP image tokens in the
    cross-attention. The self-attention gets ToDo on the same grid; both cross-attention calls of every block reach
    Neo's kernel with their whole context, as without ToDo."""
    model = network(neo, "i2v")
    patcher = neo.neo_patcher(model)
    neo.concat_latent = torch.randn(1, 4, 2, 10, 14, generator=torch.Generator().manual_seed(8))
    args = model_args((2, 10, 14), clip_fea=torch.randn(2, IMAGE, 8, generator=torch.Generator().manual_seed(9)))
    original = neo.attention_function
    seen: list[tuple[int, int]] = []

    def recording(q, k, v, heads, **kwargs):
        seen.append((q.shape[1], k.shape[1]))
        return original(q, k, v, heads, **kwargs)

    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    neo.attention_function = recording  # what ToDo finds in the slot and hands every other call to
    try:
        got = call(neo, clone, args)
    finally:
        neo.attention_function = original
    n = 2 * 5 * 7
    assert seen == [(n, 2 * 3 * 4), (n, IMAGE), (n, TEXT)] * len(model.blocks)
    expected, kernel = by_hand(neo, patcher, args, (2, 5, 7), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert kernel.host == 2 * len(model.blocks) and state.calls == len(model.blocks)


def test_frames_concatenated_along_time_are_kept_whole(neo):
    """`time_dim_concat`: 2 more frames after the video's 2; ToDo downsamples the video's frames only and keeps
    the appended tokens whole, with no bias."""
    model = network(neo)
    patcher = neo.neo_patcher(model)
    appended = torch.randn(2, 4, 2, 10, 14, generator=torch.Generator().manual_seed(4))
    args = model_args((2, 10, 14), time_dim_concat=appended)
    plain = call(neo, patcher, args)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    got = call(neo, clone, args)
    expected, kernel = by_hand(neo, patcher, args, (2, 5, 7), 2, extra=2 * 5 * 7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got, plain) and state.calls == len(model.blocks) and kernel.todo == len(model.blocks)


def test_radial_attention_set_before_todo_composes(neo):
    """Radial Attention's wrapper set first (its built-in runs before ToDo's script): ToDo wraps it, so in the
    blocks Radial makes sparse its kernel takes the call and ToDo never sees it; the dense blocks get ToDo."""
    model = network(neo, layers=3)  # block 0 dense, blocks 1 and 2 sparse
    patcher = neo.neo_patcher(model)
    radial_calls: list[int] = []
    radial = neo.radial_like_wrapper(neo, dense_block=1, calls=radial_calls)
    patcher.set_model_unet_function_wrapper(radial)
    args = model_args((2, 10, 14))
    try:
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
        got = call(neo, clone, args)
        assert radial_calls == [1, 2] and state.calls == 1 and state.applied == {1: 2.0}
        assert state.skipped == {OTHER_KERNEL: 2}  # the blocks Radial took are counted, and why
        expected, kernel = by_hand(neo, patcher, args, (2, 5, 7), 2)  # Radial alone, ToDo by hand in block 0
        assert kernel.todo == 1
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        radial_only = call(neo, patcher, args)
        assert not torch.equal(got, radial_only)
    finally:
        neo.attention = radial.original_attention
    assert not dit.installed_anywhere()


def test_a_wrapper_set_after_todo_that_does_not_chain_leaves_todo_out_and_says_so(neo):
    """Radial Attention sets its wrapper without calling the one before it: set after ToDo's, it replaces ToDo's
    and ToDo never runs; the pass then says that no attention call reached ToDo."""
    model = network(neo)
    patcher = neo.neo_patcher(model)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    radial = neo.radial_like_wrapper(neo, dense_block=1, calls=[])
    clone.set_model_unet_function_wrapper(radial)
    try:
        call(neo, clone, model_args((2, 10, 14)))
    finally:
        neo.attention = radial.original_attention
    assert state.calls == 0 and state.silence_reason() == NEVER_CALLED


@pytest.mark.parametrize("settings", [TodoSettings(factor=1), TodoSettings(factor=0)])
def test_factor_one_and_auto_at_native_are_bit_identical(neo, settings):
    patcher = neo.neo_patcher(network(neo))
    args = model_args((2, 10, 14))
    reference = call(neo, patcher, args)
    clone, state = patch_forge_patcher(patcher, settings)
    assert (clone.model_options.get("model_function_wrapper") is None) == (settings.factor == 1)
    assert torch.equal(call(neo, clone, args), reference)
    assert state.calls == 0 and state.silence_reason() is None


def test_an_exception_mid_call_restores_the_attention_function(neo):
    model = network(neo)
    patcher = neo.neo_patcher(model)
    original = neo.attention_function
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))

    def fail(module, args):
        assert neo.attention_function is not original  # ToDo is in place mid-call
        raise RuntimeError("interrupted")

    hook = model.blocks[1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            call(neo, clone, model_args((2, 10, 14)))
    finally:
        hook.remove()
    assert neo.attention_function is original and not dit.installed_anywhere()
    assert state.calls == 1  # the first block ran with ToDo


def test_the_family_serves_neo_wan_and_reads_the_latent(neo):
    model = network(neo)
    assert dit_family(model, "forge") is wan.FORGE_WAN and forge_unsupported_reason(model) is None
    assert dit_family(model, "diffusers") is None
    call_ = wan.FORGE_WAN.read_call(model, torch.zeros(1, 4, 21, 60, 105), {})
    assert (call_.grid.frames, call_.grid.h, call_.grid.w, call_.extra) == (21, 30, 53, 0)  # 480p-ish, padded up
    assert wan.FORGE_WAN.read_call(model, torch.zeros(1, 4, 60, 104), {}) is None  # not a video latent
