"""Opt-in: ToDo on Forge Neo's REAL NextDiT (backend/nn/lumina.py: Lumina 2, Neta, Z-Image; tiny configs, random
weights), through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo
written by hand in place of Neo's own attention_function on the noise refiners and main layers (the context
refiners run Neo's kernel). See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import NEXTDIT_RUNS, HandKernel, nextdit_key_layouts
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, requires_neo, tiny

from lib_todo.backends import dit, dit_family, lumina
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
CAP_DIM = 24
CONFIGS = {
    # Lumina 2 / Neta in small: GQA (3 query heads, 1 key/value head), no padding, SiLU-Linear modulation
    "lumina": {
        "dim": 48, "n_heads": 3, "n_kv_heads": 1, "axes_dims": [4, 6, 6], "axes_lens": [300, 64, 64],
        "ffn_dim_multiplier": 2.0, "multiple_of": 16,
    },
    # Z-Image in small: its modulation reads a 256-wide time embedding, so dim is at least 256; caption and image
    # padded to a multiple of 32 with learned tokens
    "z-image": {
        "dim": 256, "n_heads": 8, "n_kv_heads": 8, "axes_dims": [8, 12, 12], "axes_lens": [512, 64, 64],
        "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 64, "z_image_modulation": True, "pad_tokens_multiple": 32,
        "rope_theta": 256.0, "time_scale": 1000.0,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def neo_lumina():
    return neo_module("lumina")


def tiny_nextdit(module, config: str) -> torch.nn.Module:
    """Neo makes the pad tokens with torch.empty: all drawn anew, norm scales around 1."""
    return tiny(
        module.NextDiT, norms_around_one=True, patch_size=2, in_channels=4, n_layers=2, n_refiner_layers=1,
        qk_norm=True, cap_feat_dim=CAP_DIM, **CONFIGS[config],
    )  # fmt: skip


def nextdit_call(network, latent_hw):
    """Neo's KModel hands the conds' transformer_options on."""
    return neo_call(network, (4, *latent_hw), CAP_DIM, transformer_options={})


@pytest.mark.parametrize(("config", "latent_hw", "factor", "balance"), NEXTDIT_RUNS)
def test_neo_nextdit_equals_todo_by_hand(neo_lumina, config, latent_hw, factor, balance):
    """ToDo by hand in Neo's attention_function where the key length is a noise refiner's or a main layer's;
    every call (B, heads, L, D), as Neo's JointAttention hands it."""
    network = tiny_nextdit(neo_lumina, config)
    call = nextdit_call(network, latent_hw)
    plain = call.plain()
    got, state = call.with_todo(dit_family(network, "forge"), TodoSettings(factor=factor), balance)
    grid, layouts = nextdit_key_layouts(latent_hw, TXT, CONFIGS[config].get("pad_tokens_multiple"))
    hand = HandKernel(layouts.get, grid, factor)
    expected = call.by_hand(neo_lumina, hand, split=True)
    assert hand.todo == 3 and hand.host == 1  # noise refiner + 2 layers; the context refiner ran Neo's kernel
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * scale)
    assert (got - plain).abs().max() > 1e-3 * scale
    assert state.calls == 3 and state.skipped == {} and state.applied == {1: float(factor)}
    assert not dit.installed_anywhere()


def test_neo_nextdit_is_named_by_what_it_is(neo_lumina):
    assert dit_family(tiny_nextdit(neo_lumina, "lumina"), "forge") is lumina.FORGE_LUMINA
    assert dit_family(tiny_nextdit(neo_lumina, "z-image"), "forge") is lumina.FORGE_Z_IMAGE


def test_factor_one_installs_nothing(neo_lumina):
    factor_one_installs_nothing(nextdit_call(tiny_nextdit(neo_lumina, "z-image"), (12, 16)), lumina.FORGE_Z_IMAGE)
