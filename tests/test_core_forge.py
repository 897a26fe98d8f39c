"""Forge's attn1 patch (`n, context, value = patch(n, context, value, extra_options)`) and the patcher clone."""

from __future__ import annotations

import core_helpers as ch
import pytest
import torch

import lib_todo
from lib_todo import PassState, TodoPlan, TodoSettings
from lib_todo.backends.forge_unet import ForgeAttn1Patch, patch_unet_patcher
from lib_todo.layout import layout_of

LATENT = (16, 24)
SHAPE = [2, 4, *LATENT]


@pytest.fixture(scope="module")
def sd15_unet():
    return ch.build("ldm-sd15")


def _patch(unet, **settings) -> ForgeAttn1Patch:
    return ForgeAttn1Patch(PassState(TodoPlan(TodoSettings(**settings), layout_of(unet))))


def _tokens(n: int, c: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, n, c, generator=torch.Generator().manual_seed(seed))


def test_downsamples_context_and_value_not_q(sd15_unet):
    patch = _patch(sd15_unet, factor=2, factor_level2=1)
    n = _tokens(16 * 24)
    n_out, context, value = patch(n, n, n, {"original_shape": SHAPE})
    assert n_out is n
    assert context is value
    assert torch.equal(context, ch.interpolate_tokens(n, 16, 24, (8, 12)))
    assert patch.state.applied == {1: 2.0}


def test_level2_uses_its_own_factor(sd15_unet):
    x = _tokens(8 * 12)
    untouched = _patch(sd15_unet, factor=2, factor_level2=1)(x, x, x, {"original_shape": SHAPE})
    assert untouched[1] is x and untouched[2] is x
    n, context, value = _patch(sd15_unet, factor=2, factor_level2=2)(x, x, x, {"original_shape": SHAPE})
    assert n is x and context is value
    assert torch.equal(context, ch.interpolate_tokens(x, 8, 12, (4, 6)))


def test_uses_kv_token_count_when_tome_merged_q(sd15_unet):
    patch = _patch(sd15_unet, factor=2, factor_level2=1)
    full = _tokens(16 * 24, seed=1)
    merged_q = _tokens(16 * 24 // 2, seed=2)
    n, context, value = patch(merged_q, full, full, {"original_shape": SHAPE})
    assert n is merged_q
    assert context is value and context.shape == (2, 8 * 12, 32)
    assert torch.equal(context, ch.interpolate_tokens(full, 16, 24, (8, 12)))


@pytest.mark.parametrize(
    "case",
    ["context is not value", "no level matches", "original_shape missing", "short original_shape", "tiled"],
)
def test_leaves_alone(sd15_unet, case):
    patch = _patch(sd15_unet, factor=2, factor_level2=2)
    x = _tokens(16 * 24)
    context, value, options = x, x, {"original_shape": SHAPE}
    if case == "context is not value":
        value = _tokens(16 * 24, seed=5)
    elif case == "no level matches":
        context = value = x = _tokens(16 * 24 - 7)
    elif case == "original_shape missing":
        options = {"cond_or_uncond": [0, 1]}
    elif case == "tiled":  # HyperTile's attn1 patch ran first: 4 tiles of 8x12 per image, 96 = the level-2 count
        context = value = x = _tokens(8 * 12).repeat(4, 1, 1)
    else:
        options = {"original_shape": LATENT}
    out = patch(x, context, value, options)
    assert out[0] is x and out[1] is context and out[2] is value
    assert patch.state.applied == {}


def test_step_window(sd15_unet):
    patch = _patch(sd15_unet, factor=2, factor_level2=2, start=0.2, stop=0.5)
    x = _tokens(16 * 24)
    for fraction, acts in [(0.0, False), (0.2, True), (0.49, True), (0.5, False), (0.9, False)]:
        patch.state.set_progress(fraction)
        context = patch(x, x, x, {"original_shape": SHAPE})[1]
        assert (context is not x) == acts, fraction


def test_forge_path_equals_hook_path_on_ldm_unet(sd15_unet):
    """Calling the patch where Forge does (on norm1 output, before attn1) gives what lib_todo.apply gives."""
    unet = sd15_unet
    args, kwargs = ch.inputs(unet, "ldm-sd15", *LATENT)
    patch = _patch(unet, factor=2, factor_level2=2)

    def forge_like(module, hook_args, hook_kwargs):
        n = hook_args[0]
        n2, context, _ = patch(n, n, n, {"original_shape": list(args[0].shape)})
        if context is n:
            return None
        return (n2,), {**hook_kwargs, "context": context}

    handles = [m.register_forward_pre_hook(forge_like, with_kwargs=True) for m in ch.attn1_modules(unet)]
    try:
        forge_out = ch.run(unet, args, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    base = ch.run(unet, args, kwargs)
    with lib_todo.patched(unet, TodoSettings(factor=2, factor_level2=2)):
        hook_out = ch.run(unet, args, kwargs)
    assert patch.state.applied == {1: 2.0, 2: 2.0}
    assert torch.allclose(forge_out, hook_out, atol=1e-6)
    assert not torch.allclose(forge_out, base, atol=1e-4)


class StandInPatcher:
    """The part of Forge's UnetPatcher / ComfyUI's ModelPatcher that patch_unet_patcher uses."""

    def __init__(self, diffusion_model, patches=None):
        self.model = type("BaseModel", (), {})()
        self.model.diffusion_model = diffusion_model
        self.attn1_patches = list(patches or [])

    def clone(self):
        return StandInPatcher(self.model.diffusion_model, self.attn1_patches)

    def set_model_attn1_patch(self, patch):
        self.attn1_patches.append(patch)


def test_patch_unet_patcher_clones(sd15_unet):
    earlier = object()
    patcher = StandInPatcher(sd15_unet, [earlier])
    clone, state = patch_unet_patcher(patcher, TodoSettings(factor=3))
    assert clone is not patcher
    assert patcher.attn1_patches == [earlier]  # the original is untouched
    assert clone.attn1_patches[0] is earlier and len(clone.attn1_patches) == 2
    added = clone.attn1_patches[1]
    assert isinstance(added, ForgeAttn1Patch) and added.state is state
    assert state.plan.layout.attention_ds == (1, 2, 4, 8)
    assert state.settings.factor == 3.0
    ch.assert_no_hooks(sd15_unet)


def test_patch_unet_patcher_off_adds_nothing(sd15_unet):
    patcher = StandInPatcher(sd15_unet)
    clone, _ = patch_unet_patcher(patcher, TodoSettings(factor=1, factor_level2=1))
    assert clone.attn1_patches == [] and patcher.attn1_patches == []


def test_patch_unet_patcher_sdxl_native(sd15_unet):
    patcher = StandInPatcher(ch.build("ldm-sdxl"))
    _, state = patch_unet_patcher(patcher, TodoSettings())
    assert state.plan.layout.attention_ds == (2, 4) and state.plan.layout.native_latent == 128
    _, state = patch_unet_patcher(patcher, TodoSettings(), native_px=768)
    assert state.plan.layout.native_latent == 96
