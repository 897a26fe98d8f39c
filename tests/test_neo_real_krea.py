"""Opt-in: ToDo on Forge Neo's REAL Krea 2 code (backend/nn/krea.py `SingleStreamDiT`, tiny config, random weights),
through the DiT engine as the webui installs it (a UNet function wrapper per model call), against ToDo written by
hand in place of Neo's own attention_function on the [text, image, references] calls, the text-fusion calls left to
Neo's kernel. See tests/neo_host.py for how to run it."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel
from neo_host import TXT, factor_one_installs_nothing, neo_call, neo_module, requires_neo, tiny

from lib_todo.backends import dit, dit_family, forge_unsupported_reason, krea
from lib_todo.settings import TodoSettings

pytestmark = requires_neo
LAYERS, FUSION_CALLS = 2, 4  # Neo's text fusion: two layerwise and two refiner blocks


@pytest.fixture(scope="module")
def neo_krea():
    return neo_module("krea")


def tiny_krea(module) -> torch.nn.Module:
    """Neo builds its norms' scales and modulation tables with torch.empty: all drawn anew, small."""
    return tiny(
        module.SingleStreamDiT, std=0.1, features=64, tdim=16, txtdim=12, heads=4, kvheads=2, multiplier=2,
        layers=LAYERS, patch=2, channels=4, theta=1e3, txtlayers=3, txtheads=2, txtkvheads=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, 0), ((1, 9, 11), 2, 0), ((12, 12), 3, 0), ((1, 8, 8), 2, 1), ((1, 8, 8), 2, 2)],
)
@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_neo_krea_equals_todo_by_hand(neo_krea, latent, factor, refs, balance):
    """(B, C, 1, H, W) as Neo's Krea engine (is_wan) hands it, odd sides padded; (B, C, H, W); references through
    `_forward_with_refs` (which calls each block's `attn` itself), after the target, kept whole. ToDo by hand in
    Neo's attention_function on every call over text + image (+ refs)."""
    network = tiny_krea(neo_krea)
    assert dit_family(network, "forge") is krea.FORGE_KREA and forge_unsupported_reason(network) is None
    g = torch.Generator().manual_seed(3)
    call = neo_call(
        network, (4, *latent), 36, ref_latents=[torch.randn(1, 4, 1, 6, 6, generator=g) for _ in range(refs)]
    )
    plain = call.plain()
    got, state = call.with_todo(krea.FORGE_KREA, TodoSettings(factor=factor), balance)
    grid = (1, -(-latent[-2] // 2), -(-latent[-1] // 2))
    hand = HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)
    expected = call.by_hand(neo_krea, hand)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS
    assert not dit.installed_anywhere()


def test_factor_one_installs_nothing(neo_krea):
    factor_one_installs_nothing(neo_call(tiny_krea(neo_krea), (4, 1, 8, 8), 36), krea.FORGE_KREA)
