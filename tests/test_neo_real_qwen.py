"""Opt-in: ToDo on Forge Neo's REAL Qwen-Image code (backend/nn/qwen.py, tiny config, random weights), through the
DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in place
of Neo's own attention_function. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, qwen
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, HEADS, CHANNELS = 5, 2, 4


@pytest.fixture(scope="module")
def neo_qwen():
    return neo_module("qwen")


@pytest.fixture
def global_refs(neo_qwen):
    """Neo's `dynamic_args.ref_latents` (where the Edit engine leaves its reference latents), emptied after."""
    refs = neo_qwen.dynamic_args.ref_latents
    refs.clear()
    yield refs
    refs.clear()


def tiny_qwen(module) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * CHANNELS, out_channels=CHANNELS, num_layers=2, attention_head_dim=16,
        num_attention_heads=HEADS, joint_attention_dim=12, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    for p in network.parameters():  # Neo builds some layers with torch.empty; none may hide attention
        p.data.normal_(0.0, 0.2)
    return network.eval()


def model_call(network, latent_hw, refs=None):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, CHANNELS, 1, *latent_hw, generator=g)  # Neo's Qwen latent: (B, C, 1, H, W)
    c = {"c_crossattn": torch.randn(2, TXT, 12, generator=g)}
    if refs is not None:
        c["ref_latents"] = refs

    def apply_model(x, t, c_crossattn, ref_latents=None):
        return network(x, t, context=c_crossattn, ref_latents=ref_latents, transformer_options={})

    return apply_model, {"input": x, "timestep": torch.tensor([0.4, 0.8]), "c": c}


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    state = PassState(TodoPlan(settings, qwen.FORGE_QWEN.layout()))
    wrapper = DitCallWrapper(state, dit.installation(qwen.FORGE_QWEN, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, factor):
    """The model with Neo's attention_function doing ToDo by hand on every [text, target (, references)] call:
    (output, the key length of each call); every call by hand, (B, L, heads*D) and no mask, as Neo's Qwen hands it."""
    hand = HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function, split=False))
    with torch.no_grad():
        out = apply_model(args["input"], args["timestep"], **args["c"])
    assert hand.host == 0 and hand.masked == [False] * hand.todo
    return out, hand.keys


@pytest.mark.parametrize(("latent_hw", "factor"), [((8, 12), 2), ((9, 11), 2), ((12, 12), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_qwen_equals_todo_by_hand(neo_qwen, global_refs, monkeypatch, latent_hw, factor, balance):
    network = tiny_qwen(neo_qwen)
    apply_model, args = model_call(network, latent_hw)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    expected, seen = run_by_hand(neo_qwen, monkeypatch, apply_model, args, grid, factor)
    assert seen == [TXT + grid[1] * grid[2]] * 2  # one joint call per block: text, then the (padded) target
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 2 and state.applied == {1: float(factor)} and state.skipped == {}
    assert not dit.installed_anywhere()


@pytest.mark.parametrize("where", ["conds", "global"])
def test_neo_edit_reference_tokens_are_kept_whole(neo_qwen, global_refs, monkeypatch, where):
    """Edit: reference latents (in the conds, or in Neo's global list) are patchified after the target."""
    network = tiny_qwen(neo_qwen)
    g = torch.Generator().manual_seed(3)
    refs = [torch.randn(2, CHANNELS, 1, 6, 6, generator=g), torch.randn(2, CHANNELS, 1, 5, 8, generator=g)]
    if where == "global":
        global_refs.extend(refs)
    apply_model, args = model_call(network, (8, 8), refs if where == "conds" else None)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args)
    expected, seen = run_by_hand(neo_qwen, monkeypatch, apply_model, args, (1, 4, 4), 2)
    assert seen == [TXT + 16 + 9 + 12] * 2  # text, target 4x4, references 3x3 and 3x4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 2 and state.skipped == {}


def test_factor_one_installs_nothing(neo_qwen, global_refs):
    network = tiny_qwen(neo_qwen)
    apply_model, args = model_call(network, (8, 8))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0


def test_the_family_recognises_neos_class_and_not_a_look_alike(neo_qwen):
    from lib_todo.backends import dit_family

    network = tiny_qwen(neo_qwen)
    assert dit_family(network, "forge") is qwen.FORGE_QWEN and dit_family(network, "diffusers") is None
    inst = dit.installation(qwen.FORGE_QWEN, network)
    [(namespace, name)] = inst.slots  # the kernel's name in backend/nn/qwen.py's own globals
    assert namespace is vars(neo_qwen) and name == "attention_function"
