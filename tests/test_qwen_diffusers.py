"""ToDo on diffusers' real QwenImageTransformer2DModel (small config, random weights), end to end: the DiT engine
(lib_todo.backends.dit) with the Qwen-Image family (lib_todo.backends.qwen), installed by lib_todo.apply, against
the ORIGINAL model whose `dispatch_attention_fn` does ToDo by hand (tests/dit_reference.py). What every diffusers
family satisfies (factor 1, remove, an exception, auto, the step window, the table) is checked on the same model in
tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import math

import pytest
import torch
from dit_diffusers_cases import LAYERS, QWEN_TXT, processors, qwen_image, qwen_inputs, run, run_by_hand
from dit_family_checks import HandKernel

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, dit_family, qwen

transformer_qwenimage = pytest.importorskip("diffusers.models.transformers.transformer_qwenimage")
TXT = QWEN_TXT  # caption tokens of every call here


@pytest.fixture(scope="module")
def model():
    return qwen_image()


def by_hand(model, kwargs: dict, grid: tuple[int, int, int], factor: int, balance: bool = True):
    """The original model with its dispatch doing ToDo by hand on [text, target grid, references] calls (every
    call is one of them); (output, the hand kernel)."""
    hand = HandKernel(lambda length: TXT if length >= TXT + math.prod(grid) else None, grid, factor, balance)
    out = run_by_hand(model, kwargs, transformer_qwenimage, hand)
    assert hand.host == 0 and hand.todo == LAYERS  # one joint call per block, each by hand
    return out, hand


def test_neos_table_does_not_take_it_and_the_plan_uses_qwen_images_native_size(model):
    assert dit_family(model, "forge") is None  # Neo's class has the same name; the hosts' networks differ
    assert qwen.DIFFUSERS_QWEN.layout().native_latent == 1328 // 16


@pytest.mark.parametrize(
    ("shapes", "factor", "balance"),
    [
        ([(1, 6, 8)], 2, "channel"),
        ([(1, 6, 8)], 2, "mask"),
        ([(1, 6, 8)], 2, "off"),
        ([(1, 7, 5)], 2, "channel"),  # odd sides: smaller border cells
        ([(1, 9, 6)], 3, "channel"),
        ([(1, 6, 8), (1, 3, 4)], 2, "channel"),  # Edit: a reference image after the target, kept whole
        ([(1, 6, 8), (1, 3, 4)], 2, "mask"),
        ([(1, 6, 6), (1, 4, 4), (1, 2, 5)], 2, "channel"),  # Edit Plus: two references
    ],
)
def test_equals_the_original_model_with_todo_written_by_hand(model, shapes, factor, balance):
    kwargs = qwen_inputs(shapes)
    before = processors(model)
    with lib_todo.patched(model, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(model, kwargs)
        assert handle.applied == {1: float(factor)}
        assert handle.state.calls == LAYERS and handle.state.skipped == {}
        assert not dit.installed_anywhere()  # the kernel is ToDo's only while a forward runs
    assert not dit_diffusers.has_todo(model)
    assert all(a is b for a, b in zip(processors(model), before, strict=True))
    plain = run(model, kwargs)
    expected, _ = by_hand(model, kwargs, shapes[0], factor, balance != "off")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


@pytest.mark.parametrize("balance", ["channel", "mask"])
def test_captions_of_different_length_keep_their_mask_columns(model, balance):
    """`encoder_hidden_states_mask` (item 0 has 3 of 6 caption tokens) becomes a (B, 1, 1, T + N) boolean mask;
    ToDo keeps each kept key's column, so padding stays unseen, and equals the hand reference."""
    kwargs = qwen_inputs([(1, 6, 8), (1, 2, 3)], mask_lengths=(3, 6))
    with lib_todo.patched(model, TodoSettings(factor=2), balance=balance) as handle:
        got = run(model, kwargs)
        padding_changed = dict(kwargs, encoder_hidden_states=kwargs["encoder_hidden_states"].clone())
        padding_changed["encoder_hidden_states"][0, 3:] += 5.0
        moved = run(model, padding_changed)
    assert handle.state.calls == 2 * LAYERS
    torch.testing.assert_close(moved[0], got[0], rtol=1e-5, atol=1e-6)  # the padded caption keys stay masked
    assert (moved[1] - got[1]).abs().max() == 0.0
    plain = run(model, kwargs)
    expected, hand = by_hand(model, kwargs, (1, 6, 8), 2)
    assert hand.masked == [True] * LAYERS
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


def test_edit_2511_zero_cond_t_with_a_reference():
    """zero_cond_t (Qwen-Image-Edit-2511) modulates reference tokens from t = 0; the sequence is the same."""
    model = qwen_image(zero_cond_t=True)
    kwargs = qwen_inputs([(1, 5, 6), (1, 4, 4)])
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        got = run(model, kwargs)
    assert handle.state.calls == LAYERS
    expected, _ = by_hand(model, kwargs, (1, 5, 6), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_layered_layers_are_the_targets_frames():
    """Qwen-Image-Layered: layers + 1 images of one size generated together (frames 0..L of its 3-D RoPE), then
    the condition image: the layers are downsampled frame by frame, the condition image is kept whole."""
    model = qwen_image(use_layer3d_rope=True)
    shapes = [(1, 4, 6)] * 3 + [(1, 3, 3)]
    kwargs = qwen_inputs(shapes)
    with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
        got = run(model, kwargs)
    assert handle.state.calls == LAYERS and handle.applied == {1: 2.0}
    plain = run(model, kwargs)
    expected, _ = by_hand(model, kwargs, (3, 4, 6), 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - plain).abs().max() > 1e-3


def test_a_block_with_another_processor_is_left_alone(model, monkeypatch):
    """Its attention call reaches the replaced kernel name outside every scope, so it goes to the original."""

    class Custom:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
            return transformer_qwenimage.QwenDoubleStreamAttnProcessor2_0()(
                attn, hidden_states, encoder_hidden_states, **kwargs
            )

    block = model.transformer_blocks[0]
    original = block.attn.processor
    block.attn.processor = custom = Custom()
    kwargs = qwen_inputs([(1, 6, 8)])
    try:
        with lib_todo.patched(model, TodoSettings(factor=2)) as handle:
            got = run(model, kwargs)
            assert block.attn.processor is custom
        assert handle.state.calls == LAYERS - 1
        host = transformer_qwenimage.dispatch_attention_fn
        by_hand_after_the_first = HandKernel(lambda length: TXT, (1, 6, 8), 2).dispatch(host)
        seen = []

        def first_block_plain(query, key, value, attn_mask=None, **kw):
            seen.append(key.shape[1])
            kernel = host if len(seen) == 1 else by_hand_after_the_first
            return kernel(query, key, value, attn_mask=attn_mask, **kw)

        monkeypatch.setattr(transformer_qwenimage, "dispatch_attention_fn", first_block_plain)
        torch.testing.assert_close(got, run(model, kwargs), rtol=1e-4, atol=1e-5)
    finally:
        block.attn.processor = original


@pytest.mark.parametrize(
    ("img_shapes", "n", "layered", "expected"),
    [
        ([[(1, 6, 8)]] * 2, 48, False, (1, 6, 8)),
        ([(1, 6, 8)] * 2, 48, False, (1, 6, 8)),  # the ControlNet pipelines' flat list: one image per item
        ((1, 6, 8), 48, False, (1, 6, 8)),
        ([[(1, 6, 8), (1, 2, 2)]], 52, False, (1, 6, 8)),
        ([[(1, 6, 8), (1, 2, 2)]], 48, False, None),  # tokens and shapes disagree
        ([[(1, 4, 4)] * 2 + [(1, 2, 2)]], 36, True, (2, 4, 4)),
        ([[(1, 4, 4), (1, 4, 5), (1, 2, 2)]], 40, True, None),  # layers of different sizes
        ([[(1, 2, 2)]], 4, True, None),  # a condition image alone
        (None, 48, False, None),
        ([], 0, False, None),
        ([[(1, 6)]], 6, False, None),
        ([[(1, 0, 8)]], 0, False, None),
    ],
)
def test_target_grid_from_img_shapes(img_shapes, n, layered, expected):
    grid = qwen.target_grid(img_shapes, n, layered)
    assert (None if grid is None else (grid.frames, grid.h, grid.w)) == expected


def test_qwen_image_2_1_is_not_taken_for_qwen_image():
    """A different model (block-causal single stream, fewer queries than keys): not this family."""
    transformer_qwenimage21 = pytest.importorskip("diffusers.models.transformers.transformer_qwenimage21")
    torch.manual_seed(0)
    model = transformer_qwenimage21.QwenImage21Transformer2DModel(
        in_channels=8, out_channels=8, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        context_in_dim=24, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    assert not qwen.is_diffusers_qwen(model) and dit_family(model, "diffusers") is None
