"""Opt-in: ToDo on Forge Neo's REAL NextDiT (backend/nn/lumina.py: Lumina 2, Neta, Z-Image; tiny configs, random
weights), through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo
written by hand in place of Neo's own attention_function on the noise refiners and main layers (the context
refiners run Neo's kernel). See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import neo_module, requires_neo

from lib_todo.backends import dit, dit_family, lumina
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

pytestmark = requires_neo
TXT, CAP_DIM = 5, 24
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
    torch.manual_seed(0)
    network = module.NextDiT(
        patch_size=2, in_channels=4, n_layers=2, n_refiner_layers=1, qk_norm=True, cap_feat_dim=CAP_DIM,
        **CONFIGS[config],
    )  # fmt: skip
    with torch.no_grad():
        for name, p in network.named_parameters():  # Neo makes the pad tokens with torch.empty
            p.normal_(0.0, 0.2)
            if "norm" in name:
                p += 1.0
    return network.eval()


def model_call(network, latent_hw):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, *latent_hw, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, CAP_DIM, generator=g), "transformer_options": {}}

    def apply_model(x, t, c_crossattn, transformer_options):
        return network(x, t, context=c_crossattn, transformer_options=transformer_options)

    return apply_model, {"input": x, "timestep": torch.tensor([0.4, 0.8]), "c": c}


def key_layouts(config: str, latent_hw) -> tuple[tuple[int, int, int], dict[int, int]]:
    """The token grid and {key length: image start}: noise refiner [image, pads], main layers [caption + pads,
    image, pads]; the context refiner's caption-only length must differ from both."""
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    multiple = CONFIGS[config].get("pad_tokens_multiple") or 1
    caption = -(-TXT // multiple) * multiple
    image = -(-grid[1] * grid[2] // multiple) * multiple
    layouts = {image: 0, caption + image: caption}
    assert caption not in layouts
    return grid, layouts


def run_with_todo(network, settings, apply_model, args, balance="channel"):
    family = dit_family(network, "forge")
    state = PassState(TodoPlan(settings, family.layout()))
    wrapper = DitCallWrapper(state, dit.installation(family, network), balance=balance)
    with torch.no_grad():
        return wrapper(apply_model, args), state


def run_by_hand(module, monkeypatch, apply_model, args, grid, layouts, factor):
    """The model with Neo's attention_function doing ToDo by hand where the key length is in `layouts`; every call
    (B, heads, L, D), as Neo's JointAttention hands it."""
    hand = HandKernel(layouts.get, grid, factor)
    monkeypatch.setattr(module, "attention_function", hand.forge(module.attention_function, split=True))
    with torch.no_grad():
        return apply_model(args["input"], args["timestep"], **args["c"]), hand


@pytest.mark.parametrize(
    ("config", "latent_hw", "factor", "balance"),
    [
        ("lumina", (12, 16), 2, "channel"),
        ("lumina", (13, 15), 2, "mask"),
        ("lumina", (12, 18), 3, "channel"),
        ("z-image", (12, 16), 2, "channel"),
        ("z-image", (13, 15), 2, "mask"),
        ("z-image", (12, 18), 3, "channel"),
    ],
)
def test_neo_nextdit_equals_todo_by_hand(neo_lumina, monkeypatch, config, latent_hw, factor, balance):
    network = tiny_nextdit(neo_lumina, config)
    apply_model, args = model_call(network, latent_hw)
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=factor), apply_model, args, balance)
    grid, layouts = key_layouts(config, latent_hw)
    expected, hand = run_by_hand(neo_lumina, monkeypatch, apply_model, args, grid, layouts, factor)
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
    network = tiny_nextdit(neo_lumina, "z-image")
    apply_model, args = model_call(network, (12, 16))
    with torch.no_grad():
        plain = apply_model(args["input"], args["timestep"], **args["c"])
    got, state = run_with_todo(network, TodoSettings(factor=1), apply_model, args)
    assert torch.equal(got, plain) and state.calls == 0
