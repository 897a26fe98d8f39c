"""Opt-in: ToDo on Forge Neo's REAL Qwen-Image code (backend/nn/qwen.py, tiny config, random weights), through the
DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in place
of Neo's own attention_function. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, ref_latents_emptied, requires_neo, tiny

from lib_todo.backends import dit, dit_family, qwen
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
CHANNELS = 4


@pytest.fixture(scope="module")
def neo_qwen():
    return neo_module("qwen")


@pytest.fixture
def global_refs(neo_qwen):
    """Neo's `dynamic_args.ref_latents` (where the Edit engine leaves its reference latents)."""
    with ref_latents_emptied() as refs:
        yield refs


def tiny_qwen(module) -> torch.nn.Module:
    """Neo builds some layers with torch.empty: all drawn anew."""
    return tiny(
        module.QwenImageTransformer2DModel, patch_size=2, in_channels=4 * CHANNELS, out_channels=CHANNELS,
        num_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=12, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip


def qwen_call(network, latent_hw, **conds):
    """Neo's Qwen latent: (B, C, 1, H, W)."""
    return neo_call(network, (CHANNELS, 1, *latent_hw), 12, **conds)


def by_hand(call, module, grid, factor) -> tuple[torch.Tensor, list[int]]:
    """The call with Neo's attention_function doing ToDo by hand on every [text, target (, references)] call:
    (output, the key length of each call); every call by hand, (B, L, heads*D) and no mask, as Neo's Qwen hands it."""
    hand = HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)
    out = call.by_hand(module, hand, split=False)
    assert hand.host == 0 and hand.masked == [False] * hand.todo
    return out, hand.keys


@pytest.mark.parametrize(("latent_hw", "factor"), [((8, 12), 2), ((9, 11), 2), ((12, 12), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_qwen_equals_todo_by_hand(neo_qwen, global_refs, latent_hw, factor, balance):
    call = qwen_call(tiny_qwen(neo_qwen), latent_hw)
    plain = call.plain()
    got, state = call.with_todo(qwen.FORGE_QWEN, TodoSettings(factor=factor), balance)
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    expected, seen = by_hand(call, neo_qwen, grid, factor)
    assert seen == [TXT + grid[1] * grid[2]] * 2  # one joint call per block: text, then the (padded) target
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 2 and state.applied == {1: float(factor)} and state.skipped == {}
    assert not dit.installed_anywhere()


@pytest.mark.parametrize("where", ["conds", "global"])
def test_neo_edit_reference_tokens_are_kept_whole(neo_qwen, global_refs, where):
    """Edit: reference latents (in the conds, or in Neo's global list) are patchified after the target."""
    g = torch.Generator().manual_seed(3)
    refs = [torch.randn(2, CHANNELS, 1, 6, 6, generator=g), torch.randn(2, CHANNELS, 1, 5, 8, generator=g)]
    if where == "global":
        global_refs.extend(refs)
    call = qwen_call(tiny_qwen(neo_qwen), (8, 8), **({"ref_latents": refs} if where == "conds" else {}))
    plain = call.plain()
    got, state = call.with_todo(qwen.FORGE_QWEN, TodoSettings(factor=2))
    expected, seen = by_hand(call, neo_qwen, (1, 4, 4), 2)
    assert seen == [TXT + 16 + 9 + 12] * 2  # text, target 4x4, references 3x3 and 3x4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 2 and state.skipped == {}


def test_factor_one_installs_nothing(neo_qwen, global_refs):
    factor_one_installs_nothing(qwen_call(tiny_qwen(neo_qwen), (8, 8)), qwen.FORGE_QWEN)


def test_the_family_recognises_neos_class_and_not_a_look_alike(neo_qwen):
    network = tiny_qwen(neo_qwen)
    assert dit_family(network, "forge") is qwen.FORGE_QWEN and dit_family(network, "diffusers") is None
    inst = dit.installation(qwen.FORGE_QWEN, network)
    [(namespace, name)] = inst.slots  # the kernel's name in backend/nn/qwen.py's own globals
    assert namespace is vars(neo_qwen) and name == "attention_function"
