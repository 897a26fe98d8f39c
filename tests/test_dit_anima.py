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
from dit_family_checks import (
    HandKernel,
    StandInCall,
    factor_one_and_an_exception_leave_nothing,
    neo_stand_ins,
    randomise,
)

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import anima, dit, dit_diffusers, dit_family, forge_unsupported_reason
from lib_todo.joint_attention import ImageGrid

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


def neo_call(neo, latent: tuple[int, int, int], seed: int = 2) -> StandInCall:
    """(B, C, T, H, W) as Neo's Anima engine hands it; a randomised stand-in network."""
    parts, stub = neo
    x = torch.randn(2, 4, *latent, generator=torch.Generator().manual_seed(seed))
    c = {"c_crossattn": torch.randn(2, TXT, 12)}
    return StandInCall(parts, stub, randomise(stub.Anima()), x, torch.tensor([0.3, 0.6]), c)


def self_attention_by_hand(grid, factor) -> HandKernel:
    """ToDo by hand on the self-attention calls (the target grid first, reference frames after it); the
    cross-attention goes to the stand-in's kernel."""
    n = grid[0] * grid[1] * grid[2]
    return HandKernel(lambda length: 0 if length >= n else None, grid, factor)


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 7, 9), 2, 0), ((1, 12, 12), 3, 0), ((2, 8, 8), 2, 0), ((1, 8, 10), 2, 1)],
)
def test_neo_stand_in_equals_todo_by_hand(neo, latent, factor, refs):
    """(B, C, T, H, W) as Neo's Anima engine hands it, odd sides padded up to the patch; a video of 2 frames;
    a reference latent concatenated along T after the target, kept whole."""
    parts, stub = neo
    call = neo_call(neo, latent)
    assert dit_family(call.network, "forge") is anima.FORGE_ANIMA and forge_unsupported_reason(call.network) is None
    stub.ref_latents[:] = [torch.randn(1, 4, 1, *latent[1:]) for _ in range(refs)]
    plain = call.run()
    got, state = call.with_todo(TodoSettings(factor=factor))
    hand = self_attention_by_hand((latent[0], -(-latent[1] // 2), -(-latent[2] // 2)), factor)
    expected = call.by_hand(hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == LAYERS  # the cross-attention of each block went to Neo's kernel
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    parts, stub = neo
    stub.ref_latents[:] = [torch.randn(1, 4, 1, 7, 9)]
    call = neo_call(neo, (1, 7, 9))
    got, state = call.with_todo(TodoSettings(factor=2), balance="mask")
    torch.testing.assert_close(got, call.by_hand(self_attention_by_hand((1, 4, 5), 2)), rtol=1e-4, atol=1e-5)
    assert state.calls == LAYERS


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    call = neo_call(neo, (1, 6, 6))
    factor_one_and_an_exception_leave_nothing(call, call.network.blocks[1])


def test_neo_a_4d_latent_is_sat_out(neo):
    """Neo's Anima takes (B, C, T, H, W) only; ToDo reads no grid from anything else."""
    parts, stub = neo
    network = stub.Anima()
    assert anima.FORGE_ANIMA.read_call(network, torch.zeros(2, 4, 8, 8), {}) is None
    assert anima.FORGE_ANIMA.read_call(network, torch.zeros(2, 4, 3, 7, 8), {}).grid == ImageGrid(3, 4, 4)
