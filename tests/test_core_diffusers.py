"""ToDo on real diffusers UNet2DConditionModel (SD1.5- and SDXL-shaped, small widths, CPU, fp32)."""

from __future__ import annotations

import core_helpers as ch
import pytest
import torch

import lib_todo
from lib_todo import TodoSettings
from lib_todo.layout import layout_of

NAMES = ["sd15", "sdxl"]
LEVEL1_DS = {"sd15": 1, "sdxl": 2}
TWO = TodoSettings(factor=2, factor_level2=1)
BOTH = TodoSettings(factor=2, factor_level2=2)


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    """One UNet per architecture for the module; every test must leave it without hooks."""
    unet = ch.build(request.param)
    yield request.param, unet
    ch.assert_no_hooks(unet)


def test_off_is_bit_identical_and_unhooked(model):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, 24, 32)
    base = ch.run(unet, args, kwargs)
    with lib_todo.patched(unet, TodoSettings(factor=1, factor_level2=1)) as handle:
        assert not handle.installed
        ch.assert_no_hooks(unet)
        assert torch.equal(ch.run(unet, args, kwargs), base)


def test_factor2_attn1_equals_manual_attention(model):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, 16, 24)
    ch.assert_level1_matches_manual_attention(unet, args, kwargs, TWO, (16, 24), LEVEL1_DS[name], least=4)


@pytest.mark.parametrize("latent", [(16, 16), (24, 32)])
def test_factor2_unet_equals_reference(model, latent):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, *latent)
    base = ch.run(unet, args, kwargs)
    with ch.reference_todo(unet, name, latent, LEVEL1_DS[name], 2):
        ref = ch.run(unet, args, kwargs)
    with lib_todo.patched(unet, TWO) as handle:
        out = ch.run(unet, args, kwargs)
    assert handle.applied == {1: 2.0}
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, base, atol=1e-4)


@pytest.mark.parametrize("latent", [(65, 45), (9, 9), (135, 24)])
def test_odd_latents_run(model, latent):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, *latent, batch=1)
    levels = (LEVEL1_DS[name], 2 * LEVEL1_DS[name])
    expected = {}
    for ds in levels:
        h, w = ch.grid_after(latent, ds)
        expected[h * w] = ch.ceil_div(h, 2) * ch.ceil_div(w, 2)
    with lib_todo.patched(unet, BOTH) as handle, ch.kv_capture(unet) as calls:
        out = ch.run(unet, args, kwargs)
    assert out.shape == (1, 4, *latent)
    assert torch.isfinite(out).all()
    assert handle.applied == {1: 2.0, 2: 2.0}
    assert {q for q, _ in calls} >= set(expected)
    for q, kv in calls:
        assert kv == expected.get(q, q), f"attn1 with {q} query tokens got {kv} key/value tokens"


def test_sdxl_first_attention_level_is_half():
    unet = ch.build("sdxl")
    args, kwargs = ch.inputs(unet, "sdxl", 32, 32, batch=1)
    assert layout_of(unet).attention_ds == (2, 4)
    with lib_todo.patched(unet, TWO) as handle, ch.kv_capture(unet) as calls:
        ch.run(unet, args, kwargs)
    assert handle.applied == {1: 2.0}
    half = [kv for q, kv in calls if q == 16 * 16]
    assert half and all(kv == 16 * 16 // 4 for kv in half)
    quarter = [kv for q, kv in calls if q == 8 * 8]
    assert quarter and all(kv == 8 * 8 for kv in quarter)
    assert len(half) + len(quarter) == len(calls)  # no attention at /1


def test_apply_twice_remove_and_cycles(model):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, 16, 16)
    base = ch.run(unet, args, kwargs)
    lib_todo.apply(unet, BOTH)
    once = ch.run(unet, args, kwargs)
    count = ch.pre_hook_count(unet)
    assert count == 1 + len(ch.attn1_modules(unet))
    handle = lib_todo.apply(unet, BOTH)
    assert ch.pre_hook_count(unet) == count
    assert torch.equal(ch.run(unet, args, kwargs), once)
    assert not torch.allclose(once, base, atol=1e-4)
    handle.remove()
    ch.assert_no_hooks(unet)
    for _ in range(50):
        with lib_todo.patched(unet, BOTH):
            pass
        lib_todo.apply(unet, BOTH)
    assert lib_todo.remove(unet) == count
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


def test_caller_encoder_hidden_states_kept(model):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, 16, 16)
    h, w = ch.grid_after((16, 16), LEVEL1_DS[name])
    attn = ch.attn1_seeing(unet, args, kwargs, h * w)[0]
    dim = attn.to_q.in_features
    gen = torch.Generator().manual_seed(3)
    x, bank = torch.randn(2, h * w, dim, generator=gen), torch.randn(2, 2 * h * w, dim, generator=gen)
    with torch.no_grad():
        plain = (attn(x, encoder_hidden_states=bank), attn(x))
        with lib_todo.patched(unet, TWO):
            ch.run(unet, args, kwargs)
            hooked = (attn(x, encoder_hidden_states=bank), attn(x))
    assert torch.equal(hooked[0], plain[0])
    assert not torch.allclose(hooked[1], plain[1], atol=1e-4)


def test_exception_inside_patched_leaves_no_hook(model):
    name, unet = model
    args, kwargs = ch.inputs(unet, name, 16, 16)
    with ch.raising_forward_hook(unet.up_blocks[1], RuntimeError("boom")):
        with pytest.raises(RuntimeError, match="boom"):
            with lib_todo.patched(unet, BOTH):
                ch.run(unet, args, kwargs)
    ch.assert_no_hooks(unet)
