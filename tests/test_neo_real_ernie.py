"""Opt-in: ToDo on Forge Neo's REAL Ernie-Image code (backend/nn/ernie.py `ErnieImageModel`, tiny config, random
weights), through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo
written by hand in place of Neo's own attention_function on the [image, text] calls. See tests/neo_host.py for how
to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel, randomise
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, dit_family, ernie, forge_unsupported_reason
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, LAYERS = 5, 2


@pytest.fixture(scope="module")
def neo_ernie():
    return neo_module("ernie")


def tiny_ernie(module, patch_size: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.ErnieImageModel(
        hidden_size=32, num_attention_heads=2, num_layers=LAYERS, ffn_hidden_size=48, in_channels=8,
        out_channels=8, patch_size=patch_size, text_in_dim=24, rope_theta=256, rope_axes_dim=(4, 6, 6),
    )  # fmt: skip
    return randomise(network)


def model_call(network, latent_hw):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, *latent_hw, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, 24, generator=g)}

    def apply_model(x, t, c_crossattn):
        return network(x, t, context=c_crossattn, transformer_options={})

    return apply_model, {"input": x, "timestep": torch.tensor([400.0, 800.0]), "c": c}


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    state = PassState(TodoPlan(settings, ernie.FORGE_ERNIE.layout()))
    wrapper = DitCallWrapper(state, dit.installation(ernie.FORGE_ERNIE, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, factor):
    """The model with Neo's attention_function doing ToDo by hand on every [image, text] call."""
    n = grid[1] * grid[2]
    hand = HandKernel(lambda length: 0 if length == n + TXT else None, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function))
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"]), hand


@pytest.mark.parametrize(
    ("latent_hw", "patch", "factor"), [((8, 12), 1, 2), ((9, 11), 1, 2), ((12, 12), 1, 3), ((8, 10), 2, 2)]
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_ernie_equals_todo_by_hand(neo_ernie, monkeypatch, latent_hw, patch, factor, balance):
    network = tiny_ernie(neo_ernie, patch)
    assert dit_family(network, "forge") is ernie.FORGE_ERNIE and forge_unsupported_reason(network) is None
    apply_model, args = model_call(network, latent_hw)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid = (1, latent_hw[0] // patch, latent_hw[1] // patch)
    expected, hand = run_by_hand(neo_ernie, monkeypatch, apply_model, args, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == 0
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_ernie):
    network = tiny_ernie(neo_ernie)
    apply_model, args = model_call(network, (8, 8))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0
