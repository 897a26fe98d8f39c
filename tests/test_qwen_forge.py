"""ToDo on Qwen-Image in Forge Neo: the DiT engine with the Qwen-Image family (lib_todo.backends.qwen), installed by
lib_todo.backends.patch_forge_patcher on the stand-in of Neo's network (tests/webui_stub/stub_dit/qwen.py), against
the same network whose `attention_function` does ToDo by hand (tests/dit_reference.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins

from lib_todo.backends import dit, dit_family, forge_unsupported_reason, patch_forge_patcher, qwen
from lib_todo.backends.dit_forge import patch_dit_patcher
from lib_todo.settings import TodoSettings
from lib_todo.state import CLOSED_WINDOW

TXT = 5


@pytest.fixture
def stub() -> Iterator[Any]:
    """The Qwen stand-in (module `stub_dit.qwen`), importable for one test, then forgotten."""
    with neo_stand_ins():
        from stub_dit import qwen as stub_qwen

        stub_qwen.REF_LATENTS.clear()
        yield stub_qwen


def call(stub, patcher, latent_hw: tuple[int, int], **conds: Any) -> torch.Tensor:
    """One model call as Forge's sampling function makes it (through the wrapper when one is set)."""
    from stub_flux import call_patcher

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, stub.LATENT_CHANNELS, 1, *latent_hw, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, stub.CONTEXT_DIM, generator=g), "transformer_options": {}, **conds}
    with torch.no_grad():
        return call_patcher(patcher, x, torch.tensor([1.0, 2.0]), c)


def by_hand(stub, patcher, latent_hw, factor, **conds) -> torch.Tensor:
    """The model without ToDo, its attention_function doing ToDo by hand on [text, target, references] calls: every
    call, (B, L, heads*D) and no mask, as Neo's Qwen hands it."""
    grid = (1, -(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    hand = HandKernel(lambda length: TXT if length >= TXT + grid[1] * grid[2] else None, grid, factor)
    with kernel_replaced(stub, "attention_function", hand.forge(stub.attention_function, split=False)):
        out = call(stub, patcher, latent_hw, **conds)
    assert hand.host == 0 and hand.masked == [False] * hand.todo
    return out


def test_the_table_serves_it(stub):
    network = stub.QwenImageTransformer2DModel()
    assert dit_family(network, "forge") is qwen.FORGE_QWEN
    assert dit_family(network, "diffusers") is None
    assert forge_unsupported_reason(network) is None


@pytest.mark.parametrize(("latent_hw", "factor"), [((8, 12), 2), ((9, 11), 2), ((12, 12), 3)])
def test_whole_model_equals_todo_by_hand(stub, latent_hw, factor):
    patcher = stub.make_patcher()
    original = stub.attention_function
    plain = call(stub, patcher, latent_hw)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=factor))
    got = call(stub, clone, latent_hw)
    assert state.calls == 2 and state.applied == {1: float(factor)} and state.skipped == {}
    assert state.latent_hw == (-(-latent_hw[0] // 2), -(-latent_hw[1] // 2))
    assert stub.attention_function is original and not dit.installed_anywhere()
    expected = by_hand(stub, patcher, latent_hw, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert patcher.model_options.get("model_function_wrapper") is None  # the original patcher is untouched


def test_balance_in_a_mask(stub):
    patcher = stub.make_patcher()
    clone, state = patch_dit_patcher(patcher, qwen.FORGE_QWEN, TodoSettings(factor=2), balance="mask")
    got = call(stub, clone, (9, 10))
    torch.testing.assert_close(got, by_hand(stub, patcher, (9, 10), 2), rtol=1e-4, atol=1e-5)
    assert state.calls == 2


@pytest.mark.parametrize("where", ["conds", "global"])
def test_edit_reference_tokens_are_kept_whole(stub, where):
    """Edit's reference latents come in the conds or in Neo's global list; either way they follow the target."""
    refs = [torch.randn(1, stub.LATENT_CHANNELS, 1, 6, 5, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    conds = {"ref_latents": refs} if where == "conds" else {}
    if where == "global":
        stub.REF_LATENTS.extend(refs)
    patcher = stub.make_patcher()
    plain = call(stub, patcher, (8, 8), **conds)
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    got = call(stub, clone, (8, 8), **conds)
    assert state.calls == 2 and state.skipped == {}
    torch.testing.assert_close(got, by_hand(stub, patcher, (8, 8), 2, **conds), rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


def test_factor_1_off_and_a_closed_window_are_bit_identical(stub):
    patcher = stub.make_patcher()
    original = stub.attention_function
    plain = call(stub, patcher, (8, 8))
    for settings in (TodoSettings(factor=1), TodoSettings(factor=0)):  # factor 1; auto at 64 px (native 1328)
        clone, state = patch_forge_patcher(patcher, settings)
        assert torch.equal(call(stub, clone, (8, 8)), plain) and state.calls == 0
        if settings.factor == 1:
            assert clone.model_options.get("model_function_wrapper") is None
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2, start=0.5))
    assert torch.equal(call(stub, clone, (8, 8)), plain)
    assert state.skipped == {CLOSED_WINDOW: 1} and stub.attention_function is original


def test_an_exception_mid_call_restores_the_attention_function(stub):
    patcher = stub.make_patcher()
    original = stub.attention_function
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))

    def fail(module, args):
        assert vars(stub)["attention_function"] is not original  # ToDo is in place mid-call
        raise RuntimeError("interrupted")

    hook = patcher.model.diffusion_model.transformer_blocks[1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            call(stub, clone, (8, 8))
    finally:
        hook.remove()
    assert vars(stub)["attention_function"] is original and not dit.installed_anywhere()
    assert state.calls == 1


def test_what_a_call_holds(stub):
    network = stub.QwenImageTransformer2DModel()
    context = torch.zeros(2, 7, stub.CONTEXT_DIM)
    found = qwen.forge_call(network, torch.zeros(2, 4, 1, 9, 12), {"c_crossattn": context})
    assert (found.grid.frames, found.grid.h, found.grid.w, found.txt_len) == (1, 5, 6, 7)
    assert qwen.forge_call(network, torch.zeros(2, 4, 3, 9, 12), {"c_crossattn": context}) is None  # frames: not Qwen
    assert qwen.forge_call(network, torch.zeros(2, 4, 1, 9, 12), {}) is None


def test_nunchaku_qwen_is_served_without_offload_and_named_with_it(stub):
    class NunchakuQwenImageTransformer2DModel(stub.QwenImageTransformer2DModel):  # svdq.py's subclass, in small
        offload = False

    network = NunchakuQwenImageTransformer2DModel()
    assert dit_family(network, "forge") is qwen.FORGE_QWEN and forge_unsupported_reason(network) is None
    network.offload = True
    reason = forge_unsupported_reason(network)
    assert reason.startswith("NunchakuQwenImageTransformer2DModel") and "offload" in reason
    with pytest.raises(TypeError, match="offload"):
        patch_forge_patcher(stub.make_patcher(network), TodoSettings(factor=2))
