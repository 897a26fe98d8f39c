"""ToDo on diffusers' real FluxTransformer2DModel (small config, random weights), end to end: the DiT engine
(lib_todo.backends.dit) with the Flux family, installed by lib_todo.apply, against the ORIGINAL processors with
ToDo written by hand (tests/dit_reference.py) in their `dispatch_attention_fn`; Chroma (its text mask) and Flux.2
(4-axis ids, a reference image) the same way. What every diffusers family satisfies (factor 1, remove, an
exception, auto, the step window, the table) is checked on the same Flux model in
tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import math

import pytest
import torch
from dit_diffusers_cases import (
    FLUX_HEAD_DIM,
    FLUX_HEADS,
    TXT,
    flux1,
    flux_ids,
    flux_inputs,
    processors,
    run,
    run_by_hand,
)
from dit_family_checks import HandKernel, randomise

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, flux

diffusers = pytest.importorskip("diffusers")
transformer_flux = pytest.importorskip("diffusers.models.transformers.transformer_flux")


@pytest.fixture(scope="module")
def transformer():
    return flux1()


def joint_by_hand(grid: tuple[int, int], factor: int, balance=True) -> HandKernel:
    """ToDo written out for the ORIGINAL processors on [text, image (, references)] calls (every other key whole:
    text first, reference tokens after the image)."""
    return HandKernel(lambda length: TXT if length >= TXT + grid[0] * grid[1] else None, (1, *grid), factor, balance)


@pytest.mark.parametrize("balance", ["channel", "mask", "off"])
@pytest.mark.parametrize(("grid", "factor", "extra"), [((6, 8), 2, 0), ((7, 5), 2, 0), ((9, 6), 3, 0), ((6, 8), 2, 12)])
def test_factor_equals_the_original_processors_with_todo_written_by_hand(transformer, grid, factor, extra, balance):
    """`extra`: Kontext's reference tokens after the image, kept whole."""
    inputs = flux_inputs(*grid, extra=extra)
    before = processors(transformer)
    with lib_todo.patched(transformer, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(transformer, inputs)
        assert handle.applied == {1: float(factor)}
        assert handle.state.calls == 4  # 2 double + 2 single blocks
        assert not dit.installed_anywhere()  # the kernel is ToDo's only while a forward runs
    assert not dit_diffusers.has_todo(transformer)
    assert all(a is b for a, b in zip(processors(transformer), before, strict=True))
    plain = run(transformer, inputs)
    hand = joint_by_hand(grid, factor, balance != "off")
    expected = run_by_hand(transformer, inputs, transformer_flux, hand)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-3
    assert hand.todo == 4 and hand.host == 0  # every block's call is a joint one


def test_position_ids_that_are_not_a_grid_are_left_alone(transformer):
    inputs = flux_inputs(6, 8)
    inputs["img_ids"] = inputs["img_ids"].flip(0)
    reference = run(transformer, inputs)
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
        assert torch.equal(run(transformer, inputs), reference)
    assert handle.state.skipped == {"no grid": 1}  # counted once per forward: no attention call was touched


def test_a_failed_forward_leaves_no_kernel_replaced(transformer):
    """A block called on its own after a failed forward runs the host's own attention, untouched."""
    inputs = flux_inputs(6, 8)
    block = transformer.single_transformer_blocks[0]
    probe = torch.randn(2, TXT + 48, 2 * FLUX_HEAD_DIM), torch.randn(2, 2 * FLUX_HEAD_DIM)
    with torch.no_grad():
        reference = block(probe[0][:, TXT:], probe[0][:, :TXT], probe[1])
    with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
        with pytest.raises(Exception):  # noqa: B017 - any failure inside the forward will do
            run(transformer, {**inputs, "pooled_projections": torch.zeros(2, 3)})
        assert not dit.installed_anywhere()
        with torch.no_grad():
            alone = block(probe[0][:, TXT:], probe[0][:, :TXT], probe[1])
        assert all(torch.equal(a, b) for a, b in zip(alone, reference, strict=True))
        assert handle.state.calls == 0


def test_other_processors_are_not_touched(transformer):
    class Custom:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
            return transformer_flux.FluxAttnProcessor()(
                attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
            )

    block = transformer.transformer_blocks[0]
    original = block.attn.processor
    block.attn.processor = custom = Custom()
    try:
        with lib_todo.patched(transformer, TodoSettings(factor=2)) as handle:
            run(transformer, flux_inputs(6, 8))
            assert block.attn.processor is custom
        assert handle.state.calls == 3
        assert block.attn.processor is custom
    finally:
        block.attn.processor = original


@pytest.mark.parametrize(
    ("ids", "n", "expected"),
    [
        (flux_ids(3, 4), 12, (3, 4)),
        (flux_ids(3, 4) + torch.tensor([0.0, 5.0, 7.0]), 12, (3, 4)),  # offset positions
        (flux_ids(3, 4).unsqueeze(0), 12, (3, 4)),  # the deprecated batched ids
        (flux_ids(3, 4), 13, None),
        (flux_ids(4, 3)[torch.randperm(12, generator=torch.Generator().manual_seed(0))], 12, None),
        (None, 12, None),
    ],
)
def test_image_grid_from_ids(ids, n, expected):
    assert flux.image_grid(ids, n) == expected


def test_the_bench_bound_attends_to_the_text_keys_only(monkeypatch):
    """dit.BoundCall (the bench's bound: image keys cost nothing) on a lone block, in place of its kernel."""
    from lib_todo.joint_attention import ImageGrid
    from lib_todo.plan import TodoPlan
    from lib_todo.state import PassState

    torch.manual_seed(0)
    block = transformer_flux.FluxSingleTransformerBlock(32, 2, 16).eval()
    inst = dit.installation(flux.DIFFUSERS_FLUX, block, [(block.attn, dit.text_then_image)])
    state = PassState(TodoPlan(TodoSettings(factor=2), flux.DIFFUSERS_FLUX.layout()))
    x = torch.randn(2, TXT + 12, 32)
    with torch.no_grad():
        with dit.call_scope(inst, dit.BoundCall(dit.DitCall(ImageGrid(1, 3, 4), TXT), state)):
            bound = block.attn(hidden_states=x)
        assert not dit.installed_anywhere()

        def text_only(query, key, value, attn_mask=None, **kwargs):
            logits = torch.einsum("blhd,bshd->bhls", query, key[:, :TXT]) / math.sqrt(query.shape[-1])
            return torch.einsum("bhls,bshd->blhd", logits.softmax(-1), value[:, :TXT])

        monkeypatch.setattr(transformer_flux, "dispatch_attention_fn", text_only)
        expected = block.attn(hidden_states=x)
    assert torch.allclose(bound, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("side_px", "factor"),
    [(512, 1), (1024, 1), (1280, 1), (1528, 1), (1536, 2), (2048, 2), (2552, 2), (2560, 3), (3072, 3), (3584, 4)],
)
def test_dit_auto_factor_by_generated_side(side_px, factor):
    """Against Flux's native 1024 px: off below 1.5x native, then the side ratio rounded half up."""
    tokens = side_px // flux.TOKEN_PX
    assert lib_todo.auto_factors((tokens, tokens), flux.DIFFUSERS_FLUX.layout()) == (factor, 1)


def test_dit_auto_uses_the_geometric_mean_side():
    layout = flux.DIFFUSERS_FLUX.layout()
    assert lib_todo.auto_factors((1536 // 16, 1024 // 16), layout) == (1, 1)  # sqrt(1536 * 1024) = 1254 px
    assert lib_todo.auto_factors((2048 // 16, 1536 // 16), layout) == (2, 1)


# Chroma (Flux's processor, with the pipeline's text mask) and Flux.2 (its own processors, 4 RoPE axes)


def assert_equals_todo_by_hand(model, inputs: dict, module, grid: tuple[int, int]) -> None:
    """At factor 2 every joint call (one double, one single block) is served, equal to the ORIGINAL model with
    ToDo by hand in `module`'s dispatch, and far from the plain model."""
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        got = run(model, inputs)
    assert handle.state.calls == 2 and handle.applied == {1: 2.0}
    plain = run(model, inputs)
    expected = run_by_hand(model, inputs, module, joint_by_hand(grid, 2))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


def test_chroma_with_its_text_mask_equals_todo_by_hand():
    """ChromaPipeline's mask (text padding 0, the rest 1) becomes m_i * m_j per block; ToDo keeps its columns."""
    model = randomise(
        diffusers.ChromaTransformer2DModel(
            in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=FLUX_HEAD_DIM,
            num_attention_heads=FLUX_HEADS, joint_attention_dim=24, axes_dims_rope=(4, 6, 6),
            approximator_num_channels=8, approximator_hidden_dim=32, approximator_layers=1,
        )
    )  # fmt: skip
    g = torch.Generator().manual_seed(4)
    mask = torch.ones(2, TXT + 42)
    mask[0, 3:TXT] = 0.0  # the first prompt is shorter
    inputs = {
        "hidden_states": torch.randn(2, 42, 8, generator=g),
        "encoder_hidden_states": torch.randn(2, TXT, 24, generator=g),
        "timestep": torch.tensor([0.3, 0.6]),
        "img_ids": flux_ids(6, 7),
        "txt_ids": torch.zeros(TXT, 3),
        "attention_mask": mask,
    }
    assert_equals_todo_by_hand(model, inputs, transformer_flux, (6, 7))  # Chroma's blocks run Flux's processors


@pytest.mark.parametrize("references", [0, 1])
def test_flux2_equals_todo_by_hand_and_keeps_reference_tokens(references):
    """Flux.2: ids (T, H, W, L); a reference image (T = 10) follows the target and is kept whole."""
    from diffusers.models.transformers import transformer_flux2

    model = randomise(
        diffusers.Flux2Transformer2DModel(
            in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=FLUX_HEAD_DIM,
            num_attention_heads=FLUX_HEADS, joint_attention_dim=24, timestep_guidance_channels=16,
            axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
        )
    )  # fmt: skip
    g = torch.Generator().manual_seed(5)
    ids = torch.zeros(30, 4)
    ids[:, 1], ids[:, 2] = torch.arange(5).repeat_interleave(6), torch.arange(6).repeat(5)
    if references:
        ref = torch.zeros(9, 4)
        ref[:, 0], ref[:, 1], ref[:, 2] = 10, torch.arange(3).repeat_interleave(3), torch.arange(3).repeat(3)
        ids = torch.cat([ids, ref])
    txt_ids = torch.zeros(TXT, 4)
    txt_ids[:, 3] = torch.arange(TXT)
    inputs = {
        "hidden_states": torch.randn(2, ids.shape[0], 8, generator=g),
        "encoder_hidden_states": torch.randn(2, TXT, 24, generator=g),
        "timestep": torch.tensor([0.3, 0.6]),
        "img_ids": ids,
        "txt_ids": txt_ids,
    }
    assert_equals_todo_by_hand(model, inputs, transformer_flux2, (5, 6))
