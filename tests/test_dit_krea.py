"""ToDo on Krea 2: diffusers' real Krea2Transformer2DModel (small config, random weights) through lib_todo.apply,
and the Forge Neo stand-in (tests/webui_stub/stub_dit/krea.py) through patch_forge_patcher; each against the
ORIGINAL model with its kernel doing ToDo by hand (tests/dit_reference.py) on the [text, image, references] calls
and leaving the text-fusion calls (text only) to the host's kernel. What every diffusers family satisfies (factor 1,
remove, an exception, auto, the table) is checked on the same model in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import pytest
import torch
from dit_diffusers_cases import LAYERS, TXT, krea2, krea_inputs, run, run_by_hand
from dit_family_checks import (
    HandKernel,
    StandInCall,
    factor_one_and_an_exception_leave_nothing,
    neo_stand_ins,
    randomise,
)

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, forge_unsupported_reason, krea
from lib_todo.state import NO_GRID

krea_module = pytest.importorskip("diffusers.models.transformers.transformer_krea2")

FUSION_CALLS = 2  # one layerwise and one refiner text-fusion block


@pytest.fixture(scope="module")
def transformer():
    return krea2()


def _by_hand(model, inputs, grid: tuple[int, int], factor: int, balance: bool = True):
    """The original model with dispatch_attention_fn doing ToDo by hand on [text, image, refs] keys."""
    joint = TXT + grid[0] * grid[1]
    hand = HandKernel(lambda length: TXT if length >= joint else None, (1, *grid), factor, balance)
    return run_by_hand(model, inputs, krea_module, hand), hand


@pytest.mark.parametrize("balance", ["channel", "mask", "off"])
@pytest.mark.parametrize(("grid", "factor", "refs"), [((6, 8), 2, None), ((7, 5), 2, None), ((9, 6), 3, (4, 4))])
def test_equals_the_original_with_todo_written_by_hand(transformer, grid, factor, refs, balance):
    """The text-fusion calls (same processor class) stay with the host's kernel; references are kept whole."""
    inputs = krea_inputs(*grid, refs=refs)
    plain = run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(transformer, inputs)
        assert handle.applied == {1: float(factor)} and handle.state.calls == LAYERS
        assert handle.state.skipped == {} and not dit.installed_anywhere()
    assert not dit_diffusers.has_todo(transformer)
    expected, hand = _by_hand(transformer, inputs, grid, factor, balance != "off")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS


def test_positional_arguments_are_read_as_the_forward_names_them(transformer):
    inputs = krea_inputs(6, 8)
    names = ("hidden_states", "encoder_hidden_states", "timestep", "position_ids", "encoder_attention_mask")
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle, torch.no_grad():
        got = transformer(*(inputs[n] for n in names)).sample
    assert handle.state.calls == LAYERS
    torch.testing.assert_close(got, _by_hand(transformer, inputs, (6, 8), 2)[0], rtol=1e-4, atol=1e-5)


def test_position_ids_that_are_not_a_grid_are_left_alone(transformer):
    inputs = krea_inputs(6, 8)
    inputs["position_ids"] = torch.cat([inputs["position_ids"][:TXT], inputs["position_ids"][TXT:].flip(0)])
    reference = run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
        assert torch.equal(run(transformer, inputs), reference)
    assert handle.state.skipped == {NO_GRID: 1} and handle.state.calls == 0


def test_the_diffusers_scopes_are_the_image_blocks_attn(transformer):
    """The text-fusion blocks (same processor class) are not scopes: their calls stay with the host's kernel."""
    assert [a for a, _ in krea.diffusers_scopes(transformer)] == [b.attn for b in transformer.transformer_blocks]


# Forge Neo (the stand-in)


@pytest.fixture
def neo():
    with neo_stand_ins() as parts:
        import stub_dit.krea

        yield parts, stub_dit.krea


def neo_call(neo, latent: tuple[int, ...], refs: list | None = None, seed: int = 2) -> StandInCall:
    """A latent as given (`refs`: Neo's `ref_latents`); a randomised stand-in network."""
    parts, stub = neo
    g = torch.Generator().manual_seed(seed)
    c = {"c_crossattn": torch.randn(2, TXT, 36, generator=g)}
    if refs is not None:
        c["ref_latents"] = refs
    x = torch.randn(2, 4, *latent, generator=g)
    return StandInCall(parts, stub, randomise(stub.SingleStreamDiT()), x, torch.tensor([0.3, 0.6]), c)


def joint_by_hand(grid, factor) -> HandKernel:
    """ToDo by hand on every [text, image, references] call; the text-fusion calls go to the stand-in's kernel."""
    return HandKernel(lambda length: TXT if length >= TXT + grid[0] * grid[1] else None, (1, *grid), factor)


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, False), ((1, 7, 9), 2, False), ((12, 10), 3, False), ((1, 8, 8), 2, True)],
)
def test_neo_stand_in_equals_todo_by_hand(neo, latent, factor, refs):
    """(B, C, 1, H, W) as Neo's Krea engine hands it (odd sides padded up to the patch), or (B, C, H, W); with
    `ref_latents` the model calls each block's `attn` itself, the references after the target, kept whole."""
    parts, stub = neo
    call = neo_call(neo, latent, [torch.randn(1, 4, 1, 6, 6)] if refs else None)
    assert dit_family(call.network, "forge") is krea.FORGE_KREA and forge_unsupported_reason(call.network) is None
    plain = call.run()
    got, state = call.with_todo(TodoSettings(factor=factor))
    hand = joint_by_hand((-(-latent[-2] // 2), -(-latent[-1] // 2)), factor)
    expected = call.by_hand(hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    call = neo_call(neo, (1, 7, 9))
    got, _ = call.with_todo(TodoSettings(factor=2), balance="mask")
    torch.testing.assert_close(got, call.by_hand(joint_by_hand((4, 5), 2)), rtol=1e-4, atol=1e-5)


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    call = neo_call(neo, (1, 6, 6))
    factor_one_and_an_exception_leave_nothing(call, call.network.blocks[1])
