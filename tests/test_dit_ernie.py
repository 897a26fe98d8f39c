"""ToDo on Ernie-Image: diffusers' real ErnieImageTransformer2DModel (small config, random weights) through
lib_todo.apply, and the Forge Neo stand-in (tests/webui_stub/stub_dit/ernie.py) through patch_forge_patcher; each
against the ORIGINAL model with its kernel doing ToDo by hand (tests/dit_reference.py) on the [image, text] calls.
What every diffusers family satisfies (factor 1, remove, an exception, auto, the table) is checked on the same
model in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import pytest
import torch
from dit_diffusers_cases import LAYERS, TXT, ernie_image, ernie_inputs, run, run_by_hand
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins, randomise

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, ernie, forge_unsupported_reason, patch_forge_patcher
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.state import PassState

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


def _neo_call(h: int, w: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 8, h, w, generator=g), torch.tensor([0.3, 0.6]), {"c_crossattn": torch.randn(2, TXT, 24)}


def _neo_by_hand(parts, stub, patcher, call, grid, factor, balance=True):
    n = grid[0] * grid[1]
    hand = HandKernel(lambda length: 0 if length == n + TXT else None, (1, *grid), factor, balance)
    with kernel_replaced(stub, "attention_function", hand.forge(stub.attention_function)), torch.no_grad():
        return parts.call_patcher(patcher, *call), hand


@pytest.mark.parametrize(("latent", "patch", "factor"), [((6, 8), 1, 2), ((7, 5), 1, 3), ((8, 10), 2, 2)])
def test_neo_stand_in_equals_todo_by_hand(neo, latent, patch, factor):
    parts, stub = neo
    network = randomise(stub.ErnieImageModel(patch_size=patch))
    patcher = parts.neo_patcher(network)
    assert dit_family(network, "forge") is ernie.FORGE_ERNIE and forge_unsupported_reason(network) is None
    call = _neo_call(*latent)
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=factor))
        got = parts.call_patcher(clone, *call)
    grid = (latent[0] // patch, latent[1] // patch)
    expected, hand = _neo_by_hand(parts, stub, patcher, call, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and hand.todo == LAYERS
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    parts, stub = neo
    network = randomise(stub.ErnieImageModel())
    patcher = parts.neo_patcher(network)
    call = _neo_call(7, 9)
    state = PassState(TodoPlan(TodoSettings(factor=2), ernie.FORGE_ERNIE.layout()))
    wrapper = DitCallWrapper(state, dit.installation(ernie.FORGE_ERNIE, network), balance="mask")
    with torch.no_grad():
        got = wrapper(patcher.model.apply_model, {"input": call[0], "timestep": call[1], "c": call[2]})
    expected, _ = _neo_by_hand(parts, stub, patcher, call, (7, 9), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    parts, stub = neo
    network = randomise(stub.ErnieImageModel())
    patcher = parts.neo_patcher(network)
    call = _neo_call(6, 6)
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=1))
        assert "model_function_wrapper" not in clone.model_options
        assert torch.equal(parts.call_patcher(clone, *call), plain) and state.calls == 0
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    hook = network.layers[1].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"), torch.no_grad():
        parts.call_patcher(clone, *call)
    hook.remove()
    assert state.calls == 1 and stub.attention_function is parts.attention_function and not dit.installed_anywhere()
