"""ToDo on NextDiT (Lumina 2, Neta, Z-Image) in Forge Neo: the DiT engine with the family of lib_todo.backends.lumina,
installed by lib_todo.backends.patch_forge_patcher on the stand-in of Neo's network (tests/webui_stub/stub_dit/
lumina.py), in a Lumina-like config (no padding, GQA, SiLU modulation) and a Z-Image-like one (caption and image
padded to 32 with learned tokens, bare-Linear modulation), against the same network whose `attention_function`
does ToDo by hand (tests/dit_reference.py) on the noise refiners and main layers and runs the kernel itself on
the context refiners."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from dit_family_checks import NEXTDIT_RUNS, HandKernel, StandInCall, neo_stand_ins, nextdit_key_layouts, randomise

from lib_todo.backends import dit, dit_family, forge_unsupported_reason, lumina, patch_forge_patcher, served_families
from lib_todo.settings import TodoSettings
from lib_todo.state import CLOSED_WINDOW

TXT, CAP_DIM = 5, 24
CONFIGS = {
    "lumina": {"kv_heads": 1, "pad_tokens_multiple": None, "z_image_modulation": False},
    "z-image": {"kv_heads": 2, "pad_tokens_multiple": 32, "z_image_modulation": True},
}


@pytest.fixture
def stub() -> Iterator[Any]:
    """The NextDiT stand-ins (modules `stub_dit.lumina`, `stub_dit.lumina_fused`), importable for one test."""
    with neo_stand_ins():
        from stub_dit import lumina as stub_lumina
        from stub_dit import lumina_fused

        stub_lumina.fused = lumina_fused
        yield stub_lumina


def make_network(stub: Any, config: str) -> torch.nn.Module:
    torch.manual_seed(0)
    network = stub.NextDiT(cap_feat_dim=CAP_DIM, **CONFIGS[config])
    return randomise(network, norms_around_one=True)  # pad tokens start empty, as in Neo


def model_args(latent_hw: tuple[int, int], batch: int = 2, **conds: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(batch, 4, *latent_hw, generator=g)
    c = {"c_crossattn": torch.randn(batch, TXT, CAP_DIM, generator=g), "transformer_options": {}, **conds}
    return {"input": x, "timestep": torch.tensor([0.3, 0.8][:batch]), "c": c}


def nextdit_call(stub, network, latent_hw: tuple[int, int], **conds: Any) -> StandInCall:
    """One call of the stand-in through Neo's patcher (its `neo_parts`)."""
    args = model_args(latent_hw, **conds)
    return StandInCall(stub.neo_parts, stub, network, args["input"], args["timestep"], args["c"])


def by_hand(call: StandInCall, config: str, latent_hw, factor: int, module: Any = None) -> torch.Tensor:
    """The call without ToDo, the `attention_function` (of `module`, default lumina.py's) doing ToDo by hand where
    the key length says noise refiner or main layer, and running the original elsewhere; every call (B, heads, L, D),
    as Neo's JointAttention hands it."""
    grid, layouts = nextdit_key_layouts(latent_hw, TXT, CONFIGS[config]["pad_tokens_multiple"])
    return call.by_hand(HandKernel(layouts.get, grid, factor), module, split=True)


@pytest.mark.parametrize(("config", "latent_hw", "factor", "balance"), NEXTDIT_RUNS)
def test_whole_model_equals_todo_by_hand(stub, config, latent_hw, factor, balance):
    network = make_network(stub, config)
    call = nextdit_call(stub, network, latent_hw)
    plain = call.run()
    got, state = call.with_todo(TodoSettings(factor=factor), balance)
    expected = by_hand(call, config, latent_hw, factor)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * scale)
    assert (got - plain).abs().max() > 1e-3 * scale
    assert state.calls == len(network.noise_refiner) + len(network.layers) and state.skipped == {}
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    assert state.applied == {1: float(factor)} and state.latent_hw == grid[1:]
    assert not dit.installed_anywhere()


def test_context_refiner_with_its_caption_mask_is_untouched(stub):
    """Neo hands a caption mask (`attention_mask`, if a cond carries one) to the context refiners only: their output
    is the same with and without ToDo, bit for bit, and the whole model still equals ToDo by hand. (Lumina-like:
    with caption padding the mask would no longer fit the padded caption, in Neo too.)"""
    network = make_network(stub, "lumina")
    mask = torch.ones(2, TXT, dtype=torch.bool)
    mask[1, 3:] = False
    call = nextdit_call(stub, network, (12, 16), attention_mask=mask)
    seen = []
    hook = network.context_refiner[0].attention.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        call.run()
        got, state = call.with_todo(TodoSettings(factor=2))
    finally:
        hook.remove()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    torch.testing.assert_close(got, by_hand(call, "lumina", (12, 16), 2), rtol=1e-4, atol=1e-4)
    assert state.calls == 3 and state.skipped == {}


def test_fused_attention_in_another_module_is_served_through_that_module(stub):
    """Neo's Nunchaku Z-Image: the blocks' attention class lives in svdq.py and calls svdq.py's own
    `attention_function`; ToDo replaces that one for the call, and lumina.py's is never touched."""
    network = stub.fused.fuse(make_network(stub, "z-image"))
    call = nextdit_call(stub, network, (12, 16))
    lumina_kernel = stub.attention_function
    seen = []
    hook = network.layers[0].register_forward_pre_hook(
        lambda m, a: seen.append((stub.attention_function is lumina_kernel, stub.fused.attention_function))
    )
    try:
        got, state = call.with_todo(TodoSettings(factor=2))
    finally:
        hook.remove()
    assert seen[0][0] and isinstance(seen[0][1], dit.HostAttention)
    assert stub.fused.attention_function is lumina_kernel and not dit.installed_anywhere()
    expected = by_hand(call, "z-image", (12, 16), 2, module=stub.fused)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert state.calls == 3


def test_families_recognised_and_named_by_the_network(stub):
    lumina_net, z_net = make_network(stub, "lumina"), make_network(stub, "z-image")
    assert dit_family(lumina_net, "forge") is lumina.FORGE_LUMINA and lumina.FORGE_LUMINA.name == "Lumina 2"
    assert dit_family(z_net, "forge") is lumina.FORGE_Z_IMAGE and lumina.FORGE_Z_IMAGE.name == "Z-Image"
    assert forge_unsupported_reason(lumina_net) is None and forge_unsupported_reason(z_net) is None
    assert {"Lumina 2", "Z-Image"} <= set(served_families("forge").split(", "))
    assert dit_family(torch.nn.Linear(2, 2), "forge") is None


def test_factor_1_and_closed_window_are_bit_identical(stub):
    network = make_network(stub, "z-image")
    patcher = stub.neo_patcher(network)
    args = model_args((12, 16))
    original = stub.attention_function
    with torch.no_grad():
        baseline = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=1))
        assert clone.model_options.get("model_function_wrapper") is None
        assert torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2, start=0.5))
        assert torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
        assert state.skipped == {CLOSED_WINDOW: 1} and state.calls == 0
        state.set_progress(0.5)
        assert not torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
    assert state.calls == 3 and stub.attention_function is original


def test_auto_is_off_at_native_size_and_acts_above_it(stub):
    network = make_network(stub, "lumina")
    patcher = stub.neo_patcher(network)
    args = model_args((12, 16))
    with torch.no_grad():
        baseline = stub.call_patcher(patcher, args["input"], args["timestep"], args["c"])
        clone, state = patch_forge_patcher(patcher, TodoSettings())  # auto: 96 x 128 px, far below 1024 px
        assert torch.equal(stub.call_patcher(clone, args["input"], args["timestep"], args["c"]), baseline)
        assert state.calls == 0 and state.silence_reason() is None
        clone, state = patch_forge_patcher(patcher, TodoSettings(), native_px=48)  # 6 x 8 tokens: 2x native
        stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    assert state.applied == {1: 2.0}


def test_an_exception_mid_call_restores_the_attention_function(stub):
    network = make_network(stub, "lumina")
    original = stub.attention_function
    clone, state = patch_forge_patcher(stub.neo_patcher(network), TodoSettings(factor=2))

    def fail(module, args):
        assert stub.attention_function is not original  # ToDo's is in place mid-call
        raise RuntimeError("interrupted")

    hook = network.layers[1].register_forward_pre_hook(fail)
    args = model_args((12, 16))
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            stub.call_patcher(clone, args["input"], args["timestep"], args["c"])
    finally:
        hook.remove()
    assert stub.attention_function is original and not dit.installed_anywhere()
    assert state.calls == 2  # the noise refiner and the first layer
