"""Opt-in: ToDo on Forge Neo's REAL Flux code (backend/nn/flux.py, tiny config, random weights), through the DiT
engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in place of
Neo's own attention_function. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, requires_neo, tiny

from lib_todo.backends import dit, flux
from lib_todo.settings import TodoSettings

pytestmark = requires_neo


@pytest.fixture(scope="module")
def neo_flux():
    return neo_module("flux")


def tiny_flux(module, patch_size: int = 2) -> torch.nn.Module:
    return tiny(
        module.IntegratedFluxTransformer2DModel, in_channels=4, out_channels=4, vec_in_dim=8, context_in_dim=12,
        hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
        theta=10_000, patch_size=patch_size, qkv_bias=True, guidance_embed=False,
    )  # fmt: skip


def flux_call(network, latent_hw, **conds):
    """Neo's Flux is called without transformer_options; `y` the pooled text."""
    return neo_call(network, (4, *latent_hw), 12, options=False, drawn={"y": (8,)}, **conds)


def joint_by_hand(grid, factor) -> HandKernel:
    """ToDo by hand on every call over text + image (+ refs)."""
    return HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)


@pytest.mark.parametrize(("latent_hw", "factor"), [((8, 12), 2), ((9, 11), 2), ((12, 12), 3)])
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_flux_equals_todo_by_hand(neo_flux, latent_hw, factor, balance):
    """Every call (B, heads, L, D), as Neo's Flux hands it."""
    call = flux_call(tiny_flux(neo_flux), latent_hw)
    plain = call.plain()
    got, state = call.with_todo(flux.FORGE_FLUX, TodoSettings(factor=factor), balance)
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    expected = call.by_hand(neo_flux, joint_by_hand(grid, factor), split=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == 4 and state.applied == {1: float(factor)}
    assert not dit.installed_anywhere()


def test_neo_kontext_reference_tokens_are_kept_whole(neo_flux):
    ref = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    call = flux_call(tiny_flux(neo_flux), (8, 8), ref_latents=[ref])
    got, state = call.with_todo(flux.FORGE_FLUX, TodoSettings(factor=2))
    expected = call.by_hand(neo_flux, joint_by_hand((1, 4, 4), 2), split=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 4


def test_neo_flux2_style_patch_1(neo_flux):
    """Flux.2 klein patchifies 1x1: the token grid is the latent itself."""
    call = flux_call(tiny_flux(neo_flux, patch_size=1), (6, 7))
    got, state = call.with_todo(flux.FORGE_FLUX, TodoSettings(factor=2))
    expected = call.by_hand(neo_flux, joint_by_hand((1, 6, 7), 2), split=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert state.calls == 4


def test_factor_one_installs_nothing(neo_flux):
    factor_one_installs_nothing(flux_call(tiny_flux(neo_flux), (8, 8)), flux.FORGE_FLUX)
