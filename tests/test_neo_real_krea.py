"""Opt-in: ToDo on Forge Neo's REAL Krea 2 code (backend/nn/krea.py `SingleStreamDiT`, tiny config, random weights),
through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by
hand in place of Neo's own attention_function on the [text, image, references] calls, the text-fusion calls left to
Neo's kernel. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel, randomise
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, dit_family, forge_unsupported_reason, krea
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, LAYERS, FUSION_CALLS = 5, 2, 4  # Neo's text fusion: two layerwise and two refiner blocks


@pytest.fixture(scope="module")
def neo_krea():
    return neo_module("krea")


def tiny_krea(module) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.SingleStreamDiT(
        features=64, tdim=16, txtdim=12, heads=4, kvheads=2, multiplier=2, layers=LAYERS, patch=2, channels=4,
        theta=1e3, txtlayers=3, txtheads=2, txtkvheads=1,
    )  # fmt: skip
    return randomise(network, std=0.1)  # Neo builds its norms' scales and modulation tables with torch.empty


def model_call(network, latent, refs=None):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, *latent, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, 36, generator=g)}
    if refs is not None:
        c["ref_latents"] = refs

    def apply_model(x, t, c_crossattn, ref_latents=None):
        return network(x, t, context=c_crossattn, transformer_options={}, ref_latents=ref_latents)

    return apply_model, {"input": x, "timestep": torch.tensor([0.4, 0.8]), "c": c}


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    state = PassState(TodoPlan(settings, krea.FORGE_KREA.layout()))
    wrapper = DitCallWrapper(state, dit.installation(krea.FORGE_KREA, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, factor):
    """The model with Neo's attention_function doing ToDo by hand on every call over text + image (+ refs)."""
    joint = TXT + grid[1] * grid[2]
    hand = HandKernel(lambda length: TXT if length >= joint else None, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function))
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"]), hand


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 9, 11), 2, 0), ((12, 12), 3, 0), ((1, 8, 8), 2, 1), ((1, 8, 8), 2, 2)],
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_krea_equals_todo_by_hand(neo_krea, monkeypatch, latent, factor, refs, balance):
    """(B, C, 1, H, W) as Neo's Krea engine (is_wan) hands it, odd sides padded; (B, C, H, W); references through
    `_forward_with_refs` (which calls each block's `attn` itself), after the target, kept whole."""
    network = tiny_krea(neo_krea)
    assert dit_family(network, "forge") is krea.FORGE_KREA and forge_unsupported_reason(network) is None
    g = torch.Generator().manual_seed(3)
    apply_model, args = model_call(network, latent, [torch.randn(1, 4, 1, 6, 6, generator=g) for _ in range(refs)])
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid = (1, -(-latent[-2] // 2), -(-latent[-1] // 2))
    expected, hand = run_by_hand(neo_krea, monkeypatch, apply_model, args, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_krea):
    network = tiny_krea(neo_krea)
    apply_model, args = model_call(network, (1, 8, 8))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0
