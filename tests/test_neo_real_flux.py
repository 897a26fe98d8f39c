"""Opt-in: ToDo on Forge Neo's REAL Flux code (backend/nn/flux.py, tiny config, random weights), through the DiT
engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in place of
Neo's own attention_function. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, flux
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, HEADS = 5, 2


@pytest.fixture(scope="module")
def neo_flux():
    return neo_module("flux")


def tiny_flux(module, patch_size: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.IntegratedFluxTransformer2DModel(
        in_channels=4, out_channels=4, vec_in_dim=8, context_in_dim=12, hidden_size=32, mlp_ratio=2.0,
        num_heads=HEADS, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10_000,
        patch_size=patch_size, qkv_bias=True, guidance_embed=False,
    )  # fmt: skip
    for p in network.parameters():  # no zero-initialised layer may hide attention from the output
        p.data.normal_(0.0, 0.2)
    return network.eval()


def model_call(network, latent_hw, ref=None):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, *latent_hw, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, 12, generator=g), "y": torch.randn(2, 8, generator=g)}
    if ref is not None:
        c["ref_latents"] = [ref]

    def apply_model(x, t, c_crossattn, y, ref_latents=None):
        return network(x, t, context=c_crossattn, y=y, ref_latents=ref_latents)

    return apply_model, {"input": x, "timestep": torch.tensor([0.4, 0.8]), "c": c}


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    state = PassState(TodoPlan(settings, flux.FORGE_FLUX.layout()))
    wrapper = DitCallWrapper(state, dit.installation(flux.FORGE_FLUX, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, factor):
    """The model with Neo's attention_function doing ToDo by hand on every call over text + image (+ refs); every
    call (B, heads, L, D), as Neo's Flux hands it."""
    hand = HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function, split=True))
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"])


@pytest.mark.parametrize(("latent_hw", "factor"), [((8, 12), 2), ((9, 11), 2), ((12, 12), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_flux_equals_todo_by_hand(neo_flux, monkeypatch, latent_hw, factor, balance):
    network = tiny_flux(neo_flux)
    apply_model, args = model_call(network, latent_hw)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    expected = run_by_hand(neo_flux, monkeypatch, apply_model, args, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 4 and state.applied == {1: float(factor)}
    assert not dit.installed_anywhere()


def test_neo_kontext_reference_tokens_are_kept_whole(neo_flux, monkeypatch):
    network = tiny_flux(neo_flux)
    ref = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    apply_model, args = model_call(network, (8, 8), ref=ref)
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args)
    expected = run_by_hand(neo_flux, monkeypatch, apply_model, args, (1, 4, 4), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 4


def test_neo_flux2_style_patch_1(neo_flux, monkeypatch):
    """Flux.2 klein patchifies 1x1: the token grid is the latent itself."""
    network = tiny_flux(neo_flux, patch_size=1)
    apply_model, args = model_call(network, (6, 7))
    got, state = run_with_todo(network, TodoSettings(factor=2), apply_model, args)
    expected = run_by_hand(neo_flux, monkeypatch, apply_model, args, (1, 6, 7), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 4


def test_factor_one_installs_nothing(neo_flux):
    network = tiny_flux(neo_flux)
    apply_model, args = model_call(network, (8, 8))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0
