"""Opt-in: ToDo on Forge Neo's REAL Ernie-Image code (backend/nn/ernie.py `ErnieImageModel`, tiny config, random
weights), through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo
written by hand in place of Neo's own attention_function on the [image, text] calls. See tests/neo_host.py for how
to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, requires_neo, tiny

from lib_todo.backends import dit, dit_family, ernie, forge_unsupported_reason
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
LAYERS = 2


@pytest.fixture(scope="module")
def neo_ernie():
    return neo_module("ernie")


def tiny_ernie(module, patch_size: int = 1) -> torch.nn.Module:
    return tiny(
        module.ErnieImageModel, hidden_size=32, num_attention_heads=2, num_layers=LAYERS, ffn_hidden_size=48,
        in_channels=8, out_channels=8, patch_size=patch_size, text_in_dim=24, rope_theta=256, rope_axes_dim=(4, 6, 6),
    )  # fmt: skip


def ernie_call(network, latent_hw):
    return neo_call(network, (8, *latent_hw), 24, timestep=(400.0, 800.0))


@pytest.mark.parametrize(
    ("latent_hw", "patch", "factor"), [((8, 12), 1, 2), ((9, 11), 1, 2), ((12, 12), 1, 3), ((8, 10), 2, 2)]
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_ernie_equals_todo_by_hand(neo_ernie, latent_hw, patch, factor, balance):
    """ToDo by hand in Neo's attention_function on every [image, text] call."""
    network = tiny_ernie(neo_ernie, patch)
    assert dit_family(network, "forge") is ernie.FORGE_ERNIE and forge_unsupported_reason(network) is None
    call = ernie_call(network, latent_hw)
    plain = call.plain()
    got, state = call.with_todo(ernie.FORGE_ERNIE, TodoSettings(factor=factor), balance)
    grid = (1, latent_hw[0] // patch, latent_hw[1] // patch)
    hand = HandKernel(lambda length: 0 if length == grid[1] * grid[2] + TXT else None, grid, factor)
    expected = call.by_hand(neo_ernie, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == 0
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_ernie):
    factor_one_installs_nothing(ernie_call(tiny_ernie(neo_ernie), (8, 8)), ernie.FORGE_ERNIE)
