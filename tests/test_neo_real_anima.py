"""Opt-in: ToDo on Forge Neo's REAL Anima code (backend/nn/anima.py `Anima`, tiny config, random weights), through
the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by hand in
place of Neo's own attention_function on the self-attention calls (target frames first, reference frames after),
the cross-attention left to Neo's kernel. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import math

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, ref_latents_emptied, requires_neo, tiny

from lib_todo.backends import anima, dit, dit_family, forge_unsupported_reason
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
LAYERS = 2


@pytest.fixture(scope="module")
def neo_anima():
    return neo_module("anima")


@pytest.fixture
def ref_latents(neo_anima):
    """Neo's global `dynamic_args.ref_latents`, which Anima's forward reads itself."""
    with ref_latents_emptied() as refs:
        yield refs


def tiny_anima(module) -> torch.nn.Module:
    return tiny(
        module.Anima, in_channels=4, out_channels=4, patch_spatial=2, patch_temporal=1, model_channels=32,
        concat_padding_mask=True, crossattn_emb_channels=12, adaln_lora_dim=8, num_blocks=LAYERS, num_heads=2,
        rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0, rope_t_extrapolation_ratio=1.0, mlp_ratio=2.0,
    )  # fmt: skip


def self_attention_by_hand(grid, factor) -> HandKernel:
    """ToDo by hand on every self-attention call (keys as long as the queries, the target grid first); the
    cross-attention (keys: the text) goes to Neo's kernel."""
    n = math.prod(grid)
    return HandKernel(lambda length: 0 if length >= n else None, grid, factor)


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 9, 11), 2, 0), ((1, 12, 12), 3, 0), ((2, 8, 8), 2, 0), ((1, 8, 10), 2, 1)],
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_anima_equals_todo_by_hand(neo_anima, ref_latents, latent, factor, refs, balance):
    """(B, C, T, H, W) as Neo's Anima engine (is_wan) hands it, odd sides padded up to the patch; a latent of 2
    frames; a reference latent (anima_do_reference) concatenated along T after the target, kept whole."""
    network = tiny_anima(neo_anima)
    assert dit_family(network, "forge") is anima.FORGE_ANIMA and forge_unsupported_reason(network) is None
    g = torch.Generator().manual_seed(3)
    ref_latents.extend(torch.randn(1, 4, 1, *latent[1:], generator=g) for _ in range(refs))
    call = neo_call(network, (4, *latent), 12)
    plain = call.plain()
    got, state = call.with_todo(anima.FORGE_ANIMA, TodoSettings(factor=factor), balance)
    hand = self_attention_by_hand((latent[0], -(-latent[1] // 2), -(-latent[2] // 2)), factor)
    expected = call.by_hand(neo_anima, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == LAYERS  # each block's cross-attention went to Neo's kernel
    assert hand.left == [(hand.keys[0], TXT)] * LAYERS  # ...with the text as its keys
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_anima, ref_latents):
    factor_one_installs_nothing(neo_call(tiny_anima(neo_anima), (4, 1, 8, 8), 12), anima.FORGE_ANIMA)
