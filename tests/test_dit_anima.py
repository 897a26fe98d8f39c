"""ToDo on Anima: diffusers' real CosmosTransformer3DModel (what diffusers runs Anima on; small config, random
weights) through lib_todo.apply, and the Forge Neo stand-in (tests/webui_stub/stub_dit/anima.py) through
patch_forge_patcher; each against the ORIGINAL model with its kernel doing ToDo by hand (tests/dit_reference.py) on
the self-attention calls (image frames only, references after them) and leaving the cross-attention to the host.
What every diffusers family satisfies (factor 1, remove, an exception, auto, the table) is checked on the same
model in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import pytest
import torch
from dit_diffusers_cases import LAYERS, TXT, anima_inputs, cosmos, run, run_by_hand
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins, randomise

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import anima, dit, dit_diffusers, dit_family, forge_unsupported_reason, patch_forge_patcher
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.joint_attention import ImageGrid
from lib_todo.plan import TodoPlan
from lib_todo.state import PassState

cosmos_module = pytest.importorskip("diffusers.models.transformers.transformer_cosmos")


@pytest.fixture(scope="module")
def transformer():
    return cosmos()


def _by_hand(model, inputs, grid: tuple[int, int, int], factor: int, balance: bool = True):
    """The original model with dispatch_attention_fn doing ToDo by hand on the image-only self-attention."""
    n = grid[0] * grid[1] * grid[2]
    hand = HandKernel(lambda length: 0 if length == n else None, grid, factor, balance)
    return run_by_hand(model, inputs, cosmos_module, hand), hand


@pytest.mark.parametrize(
    ("latent", "factor", "balance"),
    [
        ((1, 12, 16), 2, "channel"),
        ((1, 14, 10), 2, "channel"),  # 7 x 5 tokens: border cells, where balance matters
        ((1, 14, 10), 2, "mask"),
        ((1, 14, 10), 2, "off"),
        ((1, 18, 12), 3, "channel"),
        ((3, 8, 12), 2, "channel"),  # a video: cells 1 x f x f per frame
    ],
)
def test_equals_the_original_with_todo_written_by_hand(transformer, latent, factor, balance):
    """attn2 (cross-attention to the masked text; the same processor class) stays with the host's kernel."""
    inputs = anima_inputs(*latent)
    plain = run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(transformer, inputs)
        assert handle.applied == {1: float(factor)} and handle.state.calls == LAYERS
        assert handle.state.skipped == {} and not dit.installed_anywhere()
    assert not dit_diffusers.has_todo(transformer)
    grid = (latent[0], latent[1] // 2, latent[2] // 2)
    expected, hand = _by_hand(transformer, inputs, grid, factor, balance != "off")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert hand.todo == LAYERS and hand.host == LAYERS  # one cross-attention per block, left alone


def test_the_grid_is_the_latent_over_the_patch_and_a_latent_it_does_not_divide_is_sat_out(transformer):
    """The model's patch embedding reshapes the latent, so its sides must divide; ToDo reads no grid otherwise."""
    read = anima.DIFFUSERS_ANIMA.read_call
    assert read(transformer, (), {"hidden_states": torch.zeros(2, 4, 3, 6, 10)}).grid == ImageGrid(3, 3, 5)
    assert read(transformer, (torch.zeros(1, 4, 1, 7, 8),), {}) is None
    assert read(transformer, (torch.zeros(1, 4, 8, 8),), {}) is None


def test_positional_arguments_are_read_as_the_forward_names_them(transformer):
    inputs = anima_inputs(1, 12, 16)
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle, torch.no_grad():
        got = transformer(inputs["hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"]).sample
    assert handle.state.calls == LAYERS
    expected, _ = _by_hand(transformer, {**inputs, "attention_mask": None}, (1, 6, 8), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_the_diffusers_scopes_are_attn1_only(transformer):
    assert [a for a, _ in anima.diffusers_scopes(transformer)] == [b.attn1 for b in transformer.transformer_blocks]


# Forge Neo (the stand-in)


@pytest.fixture
def neo():
    with neo_stand_ins() as parts:
        import stub_dit.anima

        yield parts, stub_dit.anima
        stub_dit.anima.ref_latents.clear()


def _neo_call(latent: tuple[int, int, int], seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, *latent, generator=g), torch.tensor([0.3, 0.6]), {"c_crossattn": torch.randn(2, TXT, 12)}


def _neo_by_hand(parts, stub, patcher, call, grid, factor):
    n = grid[0] * grid[1] * grid[2]
    hand = HandKernel(lambda length: 0 if length >= n else None, grid, factor)
    with kernel_replaced(stub, "attention_function", hand.forge(stub.attention_function)), torch.no_grad():
        return parts.call_patcher(patcher, *call), hand


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 7, 9), 2, 0), ((1, 12, 12), 3, 0), ((2, 8, 8), 2, 0), ((1, 8, 10), 2, 1)],
)
def test_neo_stand_in_equals_todo_by_hand(neo, latent, factor, refs):
    """(B, C, T, H, W) as Neo's Anima engine hands it, odd sides padded up to the patch; a video of 2 frames;
    a reference latent concatenated along T after the target, kept whole."""
    parts, stub = neo
    network = randomise(stub.Anima())
    patcher = parts.neo_patcher(network)
    assert dit_family(network, "forge") is anima.FORGE_ANIMA and forge_unsupported_reason(network) is None
    stub.ref_latents[:] = [torch.randn(1, 4, 1, *latent[1:]) for _ in range(refs)]
    call = _neo_call(latent)
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=factor))
        got = parts.call_patcher(clone, *call)
    grid = (latent[0], -(-latent[1] // 2), -(-latent[2] // 2))
    expected, hand = _neo_by_hand(parts, stub, patcher, call, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == LAYERS  # the cross-attention of each block went to Neo's kernel
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    parts, stub = neo
    network = randomise(stub.Anima())
    patcher = parts.neo_patcher(network)
    stub.ref_latents[:] = [torch.randn(1, 4, 1, 7, 9)]
    call = _neo_call((1, 7, 9))
    state = PassState(TodoPlan(TodoSettings(factor=2), anima.FORGE_ANIMA.layout()))
    wrapper = DitCallWrapper(state, dit.installation(anima.FORGE_ANIMA, network), balance="mask")
    with torch.no_grad():
        got = wrapper(patcher.model.apply_model, {"input": call[0], "timestep": call[1], "c": call[2]})
    expected, _ = _neo_by_hand(parts, stub, patcher, call, (1, 4, 5), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == LAYERS


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    parts, stub = neo
    network = randomise(stub.Anima())
    patcher = parts.neo_patcher(network)
    call = _neo_call((1, 6, 6))
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=1))
        assert "model_function_wrapper" not in clone.model_options
        assert torch.equal(parts.call_patcher(clone, *call), plain) and state.calls == 0
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    hook = network.blocks[1].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"), torch.no_grad():
        parts.call_patcher(clone, *call)
    hook.remove()
    assert state.calls == 1 and stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_a_4d_latent_is_sat_out(neo):
    """Neo's Anima takes (B, C, T, H, W) only; ToDo reads no grid from anything else."""
    parts, stub = neo
    network = stub.Anima()
    assert anima.FORGE_ANIMA.read_call(network, torch.zeros(2, 4, 8, 8), {}) is None
    assert anima.FORGE_ANIMA.read_call(network, torch.zeros(2, 4, 3, 7, 8), {}).grid == ImageGrid(3, 4, 4)
