"""ToDo on Krea 2: diffusers' real Krea2Transformer2DModel (small config, random weights) through lib_todo.apply,
and the Forge Neo stand-in (tests/webui_stub/stub_dit/krea.py) through patch_forge_patcher; each against the
ORIGINAL model with its kernel doing ToDo by hand (tests/dit_reference.py) on the [text, image, references] calls
and leaving the text-fusion calls (text only) to the host's kernel."""

from __future__ import annotations

import pytest
import torch
from dit_family_checks import HandKernel, kernel_replaced, neo_stand_ins, randomise

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, forge_unsupported_reason, krea, patch_forge_patcher
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.state import NO_GRID, PassState

diffusers = pytest.importorskip("diffusers")
krea_module = pytest.importorskip("diffusers.models.transformers.transformer_krea2")

TXT, LAYERS, FUSION_CALLS = 5, 2, 2  # one layerwise and one refiner text-fusion block


@pytest.fixture(scope="module")
def transformer():
    model = diffusers.Krea2Transformer2DModel(
        in_channels=8, num_layers=LAYERS, attention_head_dim=16, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, timestep_embed_dim=16, text_hidden_dim=12, num_text_layers=3,
        text_num_attention_heads=2, text_num_key_value_heads=1, text_intermediate_size=16,
        num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    return randomise(model)


def _grid_ids(h: int, w: int, t: int) -> torch.Tensor:
    """(h*w, 3) ids (t, row, col), row-major, as Krea2Pipeline.prepare_position_ids writes the image's (t = 0)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.full_like(rows, t), rows, cols], dim=-1).reshape(-1, 3).float()


def _inputs(h: int, w: int, refs: tuple[int, int] | None = None, seed: int = 1) -> dict:
    """Forward kwargs for an h x w token grid, position ids as the pipeline's, the second caption 2 tokens
    shorter (masked text columns); `refs`: a reference grid appended after the target, ids (1, row, col)."""
    g = torch.Generator().manual_seed(seed)
    ids, n = torch.cat([torch.zeros(TXT, 3), _grid_ids(h, w, 0)]), h * w
    if refs:
        ids, n = torch.cat([ids, _grid_ids(*refs, 1)]), n + refs[0] * refs[1]
    mask = torch.ones(2, TXT, dtype=torch.bool)
    mask[1, -2:] = False
    return {
        "hidden_states": torch.randn(2, n, 8, generator=g),
        "encoder_hidden_states": torch.randn(2, TXT, 3, 12, generator=g),
        "timestep": torch.tensor([0.3, 0.7]),
        "position_ids": ids,
        "encoder_attention_mask": mask,
    }


def _run(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


def _by_hand(model, inputs, grid: tuple[int, int], factor: int, balance: bool = True):
    """The original model with dispatch_attention_fn doing ToDo by hand on [text, image, refs] keys."""
    joint = TXT + grid[0] * grid[1]
    hand = HandKernel(lambda length: TXT if length >= joint else None, (1, *grid), factor, balance)
    with kernel_replaced(krea_module, "dispatch_attention_fn", hand.dispatch(krea_module.dispatch_attention_fn)):
        return _run(model, inputs), hand


def test_factor_one_installs_nothing_and_is_bit_identical(transformer):
    inputs = _inputs(6, 8)
    reference = _run(transformer, inputs)
    handle = lib_todo.apply(transformer, TodoSettings(factor=1))
    assert not handle.installed and not dit_diffusers.has_todo(transformer)
    assert torch.equal(_run(transformer, inputs), reference)
    handle.remove()


@pytest.mark.parametrize("balance", ["channel", "mask", "off"])
@pytest.mark.parametrize(("grid", "factor", "refs"), [((6, 8), 2, None), ((7, 5), 2, None), ((9, 6), 3, (4, 4))])
def test_equals_the_original_with_todo_written_by_hand(transformer, grid, factor, refs, balance):
    """The text-fusion calls (same processor class) stay with the host's kernel; references are kept whole."""
    inputs = _inputs(*grid, refs=refs)
    plain = _run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=factor), balance=balance) as handle:
        got = _run(transformer, inputs)
        assert handle.applied == {1: float(factor)} and handle.state.calls == LAYERS
        assert handle.state.skipped == {} and not dit.installed_anywhere()
    assert not dit_diffusers.has_todo(transformer)
    expected, hand = _by_hand(transformer, inputs, grid, factor, balance != "off")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS


def test_positional_arguments_are_read_as_the_forward_names_them(transformer):
    inputs = _inputs(6, 8)
    names = ("hidden_states", "encoder_hidden_states", "timestep", "position_ids", "encoder_attention_mask")
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle, torch.no_grad():
        got = transformer(*(inputs[n] for n in names)).sample
    assert handle.state.calls == LAYERS
    torch.testing.assert_close(got, _by_hand(transformer, inputs, (6, 8), 2)[0], rtol=1e-4, atol=1e-5)


def test_position_ids_that_are_not_a_grid_are_left_alone(transformer):
    inputs = _inputs(6, 8)
    inputs["position_ids"] = torch.cat([inputs["position_ids"][:TXT], inputs["position_ids"][TXT:].flip(0)])
    reference = _run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
        assert torch.equal(_run(transformer, inputs), reference)
    assert handle.state.skipped == {NO_GRID: 1} and handle.state.calls == 0


def test_exception_mid_forward_restores_everything(transformer):
    inputs = _inputs(6, 8)
    reference = _run(transformer, inputs)
    block = transformer.transformer_blocks[1]
    hook = block.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("stop")))
    try:
        with pytest.raises(RuntimeError, match="stop"):
            with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
                _run(transformer, inputs)
    finally:
        hook.remove()
    assert handle.state.calls == 1
    assert not dit_diffusers.has_todo(transformer) and not dit.installed_anywhere()
    assert torch.equal(_run(transformer, inputs), reference)


def test_auto_is_off_at_native_size_and_acts_above_it(transformer):
    inputs = _inputs(12, 12)
    reference = _run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings()) as handle:
        assert torch.equal(_run(transformer, inputs), reference)
    assert handle.state.calls == 0
    with lib_todo.patched(transformer, TodoSettings(), native_px=96) as handle:
        _run(transformer, inputs)
    assert handle.applied == {1: 2.0}


def test_the_table_knows_the_diffusers_class(transformer):
    assert dit_family(transformer, "diffusers") is krea.DIFFUSERS_KREA
    assert [a for a, _ in krea.diffusers_scopes(transformer)] == [b.attn for b in transformer.transformer_blocks]


# Forge Neo (the stand-in)


@pytest.fixture
def neo():
    with neo_stand_ins() as parts:
        import stub_dit.krea

        yield parts, stub_dit.krea


def _neo_call(latent: tuple[int, ...], refs: list | None = None, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    c = {"c_crossattn": torch.randn(2, TXT, 36, generator=g)}
    if refs is not None:
        c["ref_latents"] = refs
    return torch.randn(2, 4, *latent, generator=g), torch.tensor([0.3, 0.6]), c


def _neo_by_hand(parts, stub, patcher, call, grid, factor):
    joint = TXT + grid[0] * grid[1]
    hand = HandKernel(lambda length: TXT if length >= joint else None, (1, *grid), factor)
    with kernel_replaced(stub, "attention_function", hand.forge(stub.attention_function)), torch.no_grad():
        return parts.call_patcher(patcher, *call), hand


@pytest.mark.parametrize(
    ("latent", "factor", "refs"),
    [((1, 8, 12), 2, False), ((1, 7, 9), 2, False), ((12, 10), 3, False), ((1, 8, 8), 2, True)],
)
def test_neo_stand_in_equals_todo_by_hand(neo, latent, factor, refs):
    """(B, C, 1, H, W) as Neo's Krea engine hands it (odd sides padded up to the patch), or (B, C, H, W); with
    `ref_latents` the model calls each block's `attn` itself, the references after the target, kept whole."""
    parts, stub = neo
    network = randomise(stub.SingleStreamDiT())
    patcher = parts.neo_patcher(network)
    assert dit_family(network, "forge") is krea.FORGE_KREA and forge_unsupported_reason(network) is None
    call = _neo_call(latent, [torch.randn(1, 4, 1, 6, 6)] if refs else None)
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=factor))
        got = parts.call_patcher(clone, *call)
    grid = (-(-latent[-2] // 2), -(-latent[-1] // 2))
    expected, hand = _neo_by_hand(parts, stub, patcher, call, grid, factor)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3
    assert state.calls == LAYERS and state.applied == {1: float(factor)} and state.skipped == {}
    assert hand.todo == LAYERS and hand.host == FUSION_CALLS
    assert stub.attention_function is parts.attention_function and not dit.installed_anywhere()


def test_neo_balance_in_an_sdpa_mask_gives_the_same(neo):
    parts, stub = neo
    network = randomise(stub.SingleStreamDiT())
    patcher = parts.neo_patcher(network)
    call = _neo_call((1, 7, 9))
    state = PassState(TodoPlan(TodoSettings(factor=2), krea.FORGE_KREA.layout()))
    wrapper = DitCallWrapper(state, dit.installation(krea.FORGE_KREA, network), balance="mask")
    with torch.no_grad():
        got = wrapper(patcher.model.apply_model, {"input": call[0], "timestep": call[1], "c": call[2]})
    expected, _ = _neo_by_hand(parts, stub, patcher, call, (4, 5), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_neo_factor_one_and_an_exception_leave_nothing(neo):
    parts, stub = neo
    network = randomise(stub.SingleStreamDiT())
    patcher = parts.neo_patcher(network)
    call = _neo_call((1, 6, 6))
    with torch.no_grad():
        plain = parts.call_patcher(patcher, *call)
        clone, state = patch_forge_patcher(patcher, TodoSettings(factor=1))
        assert "model_function_wrapper" not in clone.model_options
        assert torch.equal(parts.call_patcher(clone, *call), plain) and state.calls == 0
    clone, state = patch_forge_patcher(patcher, TodoSettings(factor=2))
    hook = network.blocks[1].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"), torch.no_grad():
        parts.call_patcher(clone, *call)
    hook.remove()
    assert state.calls == 1 and stub.attention_function is parts.attention_function and not dit.installed_anywhere()
