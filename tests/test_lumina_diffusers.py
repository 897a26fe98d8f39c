"""ToDo on diffusers' real Lumina2Transformer2DModel and ZImageTransformer2DModel (small configs, random weights),
end to end through lib_todo.apply: the DiT engine with the NextDiT family (lib_todo.backends.lumina).

The reference is the ORIGINAL model with its attention kernel swapped for ToDo written by hand
(tests/dit_reference.py) on the calls the test knows by their key length: the noise refiners' and the main
layers'; every other call (context refiners, SigLIP refiners) runs the original kernel. What every diffusers
family satisfies (factor 1, remove, an exception, auto, the step window, the table) is checked on the same models
in tests/test_dit_diffusers_invariants.py."""

from __future__ import annotations

import pytest
import torch
from dit_diffusers_cases import (
    CAP_DIM,
    NEXTDIT_CHANNELS,
    lumina2_inputs,
    lumina2_transformer,
    run,
    run_by_hand,
    z_image_transformer,
    z_inputs,
)
from dit_family_checks import HandKernel

import lib_todo
from lib_todo import TodoSettings
from lib_todo.backends import dit, dit_diffusers, lumina

transformer_lumina2 = pytest.importorskip("diffusers.models.transformers.transformer_lumina2")
transformer_z_image = pytest.importorskip("diffusers.models.transformers.transformer_z_image")

MULTIPLE = 32  # Z-Image pads captions and images to a multiple of 32 tokens


@pytest.fixture(scope="module")
def lumina2():
    return lumina2_transformer()


@pytest.fixture(scope="module")
def z_image():
    return z_image_transformer()


def assert_matches_and_changed(got, expected, plain):
    """Equal to the hand reference to float noise (1e-6 of the output's scale), and far from the plain model."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * scale)
    assert (got - plain).abs().max() > 1e-3 * scale


# Lumina 2


def lumina2_by_hand(model, inputs, factor, balance="channel"):
    """The original model with `F.scaled_dot_product_attention` of its processor doing ToDo by hand on the noise
    refiner (keys = the image) and the main layers (keys = each item's caption, the image, zero padding)."""
    h, w = (s // 2 for s in inputs["hidden_states"].shape[-2:])
    captions = inputs["encoder_attention_mask"].sum(1).tolist()
    layouts = {h * w: [0] * len(captions), max(captions) + h * w: captions}
    return run_by_hand(model, inputs, transformer_lumina2, HandKernel(layouts.get, (1, h, w), factor, balance != "off"))


@pytest.mark.parametrize(
    ("latent_hw", "captions", "factor", "balance"),
    [
        ((12, 16), [7, 4], 2, "channel"),
        ((12, 16), [7, 4], 2, "mask"),
        ((12, 16), [7, 4], 2, "off"),
        ((14, 10), [7, 7], 2, "channel"),
        ((12, 18), [3, 9], 3, "channel"),
        ((12, 16), [5], 2, "channel"),
    ],
)
def test_lumina2_equals_todo_by_hand_with_per_item_caption_lengths(lumina2, latent_hw, captions, factor, balance):
    """Items whose captions differ in length put the image at a different index each (a key mask then too)."""
    inputs = lumina2_inputs(latent_hw, captions)
    plain = run(lumina2, inputs)
    with lib_todo.patched(lumina2, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(lumina2, inputs)
        assert not dit.installed_anywhere() and transformer_lumina2.F is torch.nn.functional
    assert handle.applied == {1: float(factor)}
    assert handle.state.calls == 3 and handle.state.skipped == {}  # 1 noise refiner + 2 layers; context refiner: 0
    assert not dit_diffusers.has_todo(lumina2)
    expected = lumina2_by_hand(lumina2, inputs, factor, balance)
    assert_matches_and_changed(got, expected, plain)


def test_lumina2_context_refiner_is_untouched(lumina2):
    """The caption-only refiner's calls go to torch's own SDPA with their arguments as the processor made them."""
    inputs = lumina2_inputs((12, 16), [7, 4])
    seen = []
    refiner = lumina2.context_refiner[0].attn

    def watch(module, args, kwargs, output):
        seen.append(output)

    hook = refiner.register_forward_hook(watch, with_kwargs=True)
    try:
        run(lumina2, inputs)
        with lib_todo.patched(lumina2, TodoSettings(factor=2)):
            run(lumina2, inputs)
    finally:
        hook.remove()
    assert torch.equal(seen[0], seen[1])


# Z-Image


def padded(n):
    return n + (-n) % MULTIPLE


def z_by_hand(model, inputs, layouts, grid, factor, balance="channel"):
    """The original model with its dispatch doing ToDo by hand on the keys whose length is in `layouts`."""
    return run_by_hand(model, inputs, transformer_z_image, HandKernel(layouts.get, grid, factor, balance != "off"))


@pytest.mark.parametrize(
    ("latent_hw", "captions", "factor", "balance"),
    [
        ((12, 16), [7, 70], 2, "channel"),
        ((12, 16), [7, 70], 2, "off"),
        ((14, 10), [7, 20], 2, "channel"),
        ((12, 18), [70, 70], 3, "channel"),
    ],
)
def test_z_image_equals_todo_by_hand_with_pads_kept_whole(z_image, latent_hw, captions, factor, balance):
    """Noise refiner [image, pads]; main layers [image, pads, caption, pads] (image first); items whose captions pad
    to different lengths get zeros and a key mask."""
    inputs = z_inputs(latent_hw, captions)
    plain = run(z_image, inputs)
    with lib_todo.patched(z_image, TodoSettings(factor=factor), balance=balance) as handle:
        got = run(z_image, inputs)
    assert handle.applied == {1: float(factor)}
    assert handle.state.calls == 3 and handle.state.skipped == {}
    assert not dit_diffusers.has_todo(z_image) and not dit.installed_anywhere()
    grid = (1, latent_hw[0] // 2, latent_hw[1] // 2)
    image = padded(grid[1] * grid[2])
    caps = [padded(n) for n in captions]
    assert len({image, max(caps), image + max(caps)}) == 3  # the hand kernel tells the calls apart by length
    layouts = {image: [0, 0], image + max(caps): [0, 0]}
    expected = z_by_hand(z_image, inputs, layouts, grid, factor, balance)
    assert_matches_and_changed(got, expected, plain)


def test_z_image_omni_serves_the_target_and_keeps_condition_images_whole(z_image):
    """Omni: per item [captions, condition image, target, SigLIP]; the target's start differs per item."""
    g, c = torch.Generator().manual_seed(4), NEXTDIT_CHANNELS
    target = [torch.randn(c, 1, 12, 16, generator=g) for _ in range(2)]  # 6 x 8 tokens, padded to 64
    conds = [torch.randn(c, 1, 8, 8, generator=g), torch.randn(c, 1, 12, 12, generator=g)]  # 32, 64
    inputs = {
        "x": [[conds[0], target[0]], [conds[1], target[1]]],
        "t": torch.tensor([0.3, 0.8]),
        "cap_feats": [[torch.randn(n, CAP_DIM, generator=g) for n in item] for item in ([5, 9], [20, 40])],
        "siglip_feats": [[torch.randn(3, 3, 8, generator=g), None], [torch.randn(4, 2, 8, generator=g), None]],
        "image_noise_mask": [[0, 1], [0, 1]],
    }
    plain = run(z_image, inputs)
    with lib_todo.patched(z_image, TodoSettings(factor=2)) as handle:
        got = run(z_image, inputs)
    assert handle.applied == {1: 2.0} and handle.state.calls == 3 and handle.state.skipped == {}
    # captions 32 + 32 and 32 + 64; images 32 + 64 and 64 + 64; SigLIP 32 + 32 each
    layouts = {128: [32, 64], 288: [64 + 32, 96 + 64]}
    expected = z_by_hand(z_image, inputs, layouts, (1, 6, 8), 2)
    assert_matches_and_changed(got, expected, plain)


def test_z_image_called_positionally_as_its_pipeline_does(z_image):
    """ZImagePipeline passes `x, t, cap_feats` by position: the call is read the same as by keyword."""
    inputs = z_inputs((12, 16), [7, 70])
    with lib_todo.patched(z_image, TodoSettings(factor=2)) as handle:
        by_name = run(z_image, inputs)
        with torch.no_grad():
            by_position = torch.stack(z_image(inputs["x"], inputs["t"], inputs["cap_feats"], return_dict=False)[0])
    assert torch.equal(by_name, by_position) and handle.state.calls == 6 and handle.state.skipped == {}


def test_z_image_items_of_different_sizes_are_sat_out(z_image):
    inputs = z_inputs([(12, 16), (16, 12)], [7, 7])
    reference = run(z_image, inputs)
    with lib_todo.patched(z_image, TodoSettings(factor=2)) as handle:
        out = run(z_image, inputs)
    assert all(torch.equal(a, b) for a, b in zip(out, reference, strict=True))
    assert handle.state.calls == 0 and handle.state.skipped == {"no grid": 1}


def test_families_by_name(lumina2, z_image):
    """Which class is which family: tests/test_dit_diffusers_invariants.py."""
    assert not lumina.is_forge_nextdit(lumina2) and not lumina.is_forge_nextdit(z_image)  # Neo's NextDiT only
    assert lumina.DIFFUSERS_LUMINA.name == "Lumina 2" and lumina.DIFFUSERS_Z_IMAGE.name == "Z-Image"
    assert lumina.DIFFUSERS_LUMINA.native_px == lumina.DIFFUSERS_Z_IMAGE.native_px == 1024
    assert lumina.DIFFUSERS_Z_IMAGE.layout().native_latent == 64  # tokens per side at 1024 px
