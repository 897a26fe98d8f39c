"""ToDo on Ernie-Image: diffusers' real ErnieImageTransformer2DModel (small config, random weights) through
lib_todo.apply, and the Forge Neo stand-in (tests/webui_stub/stub_dit/ernie.py) through patch_forge_patcher; each
against the ORIGINAL model with its kernel doing ToDo by hand (tests/dit_reference.py) on the [image, text] calls.
What every diffusers family satisfies (factor 1, remove, an exception, auto, the table) is checked on the same
model in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import pytest
import torch
from dit_diffusers_cases import LAYERS, TXT, ernie_image, ernie_inputs, run, run_by_hand
from dit_family_checks import (
    HandKernel,
    StandInCall,
    factor_one_and_an_exception_leave_nothing,
    neo_stand_ins,
    randomise,
)

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, ernie, forge_unsupported_reason

ernie_module = pytest.importorskip("diffusers.models.transformers.transformer_ernie_image")


@pytest.fixture(scope="module")
def transformer():
    return ernie_image()


def _by_hand(model, inputs: dict, grid: tuple[int, int], factor: int, balance: bool) -> tuple[torch.Tensor, HandKernel]:
    """The original model with dispatch_attention_fn doing ToDo by hand on [image, text] keys."""
    n = grid[0] * grid[1]
    hand = HandKernel(lambda length: 0 if length == n + TXT else None, (1, *grid), factor, balance)
    return run_by_hand(model, inputs, ernie_module, hand), hand


@pytest.mark.parametrize("balance", ["channel", "mask", "off"])
@pytest.mark.parametrize(("grid", "factor"), [((6, 8), 2), ((7, 5), 2), ((9, 6), 3)])
def test_equals_the_original_with_todo_written_by_hand(transformer, grid, factor, balance):
    inputs = ernie_inputs(*grid)
    plain = run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(transformer, inputs)
        assert handle.applied == {1: float(factor)} and handle.state.calls == LAYERS
        assert not dit.installed_anywhere()  # the kernel is ToDo's only while a forward runs
    assert not dit_diffusers.has_todo(transformer)
    expected, hand = _by_hand(transformer, inputs, grid, factor, balance != "off")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3 and hand.todo == LAYERS and hand.host == 0


def test_positional_arguments_are_read_as_the_forward_names_them(transformer):
    inputs = ernie_inputs(6, 8)
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle, torch.no_grad():
        got = transformer(*inputs.values()).sample
    assert handle.state.calls == LAYERS
    torch.testing.assert_close(got, _by_hand(transformer, inputs, (6, 8), 2, True)[0], rtol=1e-4, atol=1e-5)


def test_patch_two_grid_is_the_latent_over_the_patch():
    model = ernie_image(patch_size=2)
    inputs = ernie_inputs(8, 10)
    plain = run(model, inputs)
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        got = run(model, inputs)
    assert handle.state.latent_hw == (4, 5) and handle.state.calls == LAYERS
    expected, _ = _by_hand(model, inputs, (4, 5), 2, True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


def test_other_processors_are_not_touched(transformer):
    class Custom(ernie_module.ErnieImageSingleStreamAttnProcessor):
        pass

    attention = transformer.layers[0].self_attention
    original = attention.processor
    attention.processor = Custom()
    try:
        with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
            run(transformer, ernie_inputs(6, 8))
        assert handle.state.calls == LAYERS - 1
    finally:
        attention.processor = original


def test_the_plan_uses_ernie_images_native_size():
    assert ernie.DIFFUSERS_ERNIE.layout().native_latent == 1024 // 16


# Forge Neo (the stand-in)


@pytest.fixture
def neo():
    with neo_stand_ins() as parts:
        import stub_dit.ernie

        yield parts, stub_dit.ernie


def neo_call(neo, h: int, w: int, patch: int = 1, seed: int = 2) -> StandInCall:
    """An (h, w) latent; a randomised stand-in network with this patch."""
    parts, stub = neo
    x = torch.randn(2, 8, h, w, generator=torch.Generator().manual_seed(seed))
    c = {"c_crossattn": torch.randn(2, TXT, 24)}
    return StandInCall(parts, stub, randomise(stub.ErnieImageModel(patch_size=patch)), x, torch.tensor([0.3, 0.6]), c)


def joint_by_hand(grid, factor) -> HandKernel:
    """ToDo by hand on every [image, text] call."""
    return HandKernel(lambda length: 0 if length == grid[0] * grid[1] + TXT else None, (1, *grid), factor)


@pytest.mark.parametrize(("latent", "patch", "factor"), [((6, 8), 1, 2), ((7, 5), 1, 3), ((8, 10), 2, 2)])
def test_neo_stand_in_equals_todo_by_hand(neo, latent, patch, factor):
    parts, stub = neo
    call = neo_call(neo, *latent, patch=patch)
    assert dit_family(call.network, "forge") is ernie.FORGE_ERNIE and forge_unsupported_reason(call.network) is None
    plain = call.run()
    got, state = call.with_todo(TodoSettings(factor=factor))
    hand = joint_by_hand((latent[0] // patch, latent[1] // patch), factor)
    expected = call.by_hand(hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and hand.todo == LAYERS
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    call = neo_call(neo, 7, 9)
    got, _ = call.with_todo(TodoSettings(factor=2), balance="mask")
    torch.testing.assert_close(got, call.by_hand(joint_by_hand((7, 9), 2)), rtol=1e-4, atol=1e-5)


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    call = neo_call(neo, 6, 6)
    factor_one_and_an_exception_leave_nothing(call, call.network.layers[1])
