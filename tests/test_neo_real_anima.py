"""Opt-in: ToDo on Forge Neo's REAL Anima code (backend/nn/anima.py `Anima`, tiny config, random weights), through
the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in
place of Neo's own attention_function on the self-attention calls (target frames first, reference frames after),
the cross-attention left to Neo's kernel. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel, randomise
from neo_host import neo_module, requires_neo

from lib_todo.backends import anima, dit, dit_family, forge_unsupported_reason
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, LAYERS = 5, 2


@pytest.fixture(scope="module")
def neo_anima():
    return neo_module("anima")


@pytest.fixture
def ref_latents(neo_anima):
    """Neo's global `dynamic_args.ref_latents`, which Anima's forward reads itself; emptied after each test."""
    refs = neo_anima.dynamic_args.ref_latents
    refs.clear()
    yield refs
    refs.clear()


def tiny_anima(module) -> torch.nn.Module:
    torch.manual_seed(0)
    network = module.Anima(
        in_channels=4, out_channels=4, patch_spatial=2, patch_temporal=1, model_channels=32,
        concat_padding_mask=True, crossattn_emb_channels=12, adaln_lora_dim=8, num_blocks=LAYERS, num_heads=2,
        rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0, rope_t_extrapolation_ratio=1.0, mlp_ratio=2.0,
    )  # fmt: skip
    return randomise(network)


def model_call(network, latent):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, *latent, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, 12, generator=g)}

    def apply_model(x, t, c_crossattn):
        return network(x, t, context=c_crossattn, transformer_options={})

    return apply_model, {"input": x, "timestep": torch.tensor([0.4, 0.8]), "c": c}


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    state = PassState(TodoPlan(settings, anima.FORGE_ANIMA.layout()))
    wrapper = DitCallWrapper(state, dit.installation(anima.FORGE_ANIMA, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, factor):
    """The model with Neo's attention_function doing ToDo by hand on every self-attention call (keys as long as
    the queries, the target grid first); the cross-attention (keys: the text) goes to Neo's kernel."""
    n = grid[0] * grid[1] * grid[2]
    hand = HandKernel(lambda length: 0 if length >= n else None, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function))
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"]), hand


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 9, 11), 2, 0), ((1, 12, 12), 3, 0), ((2, 8, 8), 2, 0), ((1, 8, 10), 2, 1)],
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_anima_equals_todo_by_hand(neo_anima, monkeypatch, ref_latents, latent, factor, refs, balance):
    """(B, C, T, H, W) as Neo's Anima engine (is_wan) hands it, odd sides padded up to the patch; a latent of 2
    frames; a reference latent (anima_do_reference) concatenated along T after the target, kept whole."""
    network = tiny_anima(neo_anima)
    assert dit_family(network, "forge") is anima.FORGE_ANIMA and forge_unsupported_reason(network) is None
    g = torch.Generator().manual_seed(3)
    ref_latents.extend(torch.randn(1, 4, 1, *latent[1:], generator=g) for _ in range(refs))
    apply_model, args = model_call(network, latent)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid = (latent[0], -(-latent[1] // 2), -(-latent[2] // 2))
    expected, hand = run_by_hand(neo_anima, monkeypatch, apply_model, args, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == LAYERS  # each block's cross-attention went to Neo's kernel
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_anima, ref_latents):
    network = tiny_anima(neo_anima)
    apply_model, args = model_call(network, (1, 8, 8))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0
