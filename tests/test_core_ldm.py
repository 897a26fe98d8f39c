"""ToDo on the real ldm UNetModel and attention code that A1111 runs (small widths, CPU, fp32)."""

from __future__ import annotations

import gc

import core_helpers as ch
import pytest
import tomesd
import torch

import lib_todo
from lib_todo import TodoSettings, level_grid
from lib_todo.bench.unets import a1111_skip_resize
from lib_todo.layout import layout_of

NAMES = ["ldm-sd15", "ldm-sdxl"]
LEVEL1_DS = {"ldm-sd15": 1, "ldm-sdxl": 2}
TWO = TodoSettings(factor=2, factor_level2=1)
BOTH = TodoSettings(factor=2, factor_level2=2)


def _setup(name: str, latent: tuple[int, int] = (16, 16), batch: int = 2):
    unet = ch.build(name)
    args, kwargs = ch.inputs(unet, name, *latent, batch=batch)
    return unet, args, kwargs


@pytest.mark.parametrize("name", NAMES)
def test_off_is_bit_identical_and_unhooked(name):
    unet, args, kwargs = _setup(name, (24, 32))
    base = ch.run(unet, args, kwargs)
    off = TodoSettings(factor=1, factor_level2=1)
    handle = lib_todo.apply(unet, off)
    assert not handle.installed
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)
    with lib_todo.patched(unet, off):
        ch.assert_no_hooks(unet)
        assert torch.equal(ch.run(unet, args, kwargs), base)
    assert handle.applied == {}


@pytest.mark.parametrize("name", NAMES)
def test_factor2_attn1_equals_manual_attention(name):
    """Each level-1 attn1 output equals attention written out with k/v from F.interpolate(norm1 output)."""
    unet, args, kwargs = _setup(name, (16, 24))
    # 2 input + 3 output blocks on level 1
    ch.assert_level1_matches_manual_attention(unet, args, kwargs, TWO, (16, 24), LEVEL1_DS[name], least=5)


@pytest.mark.parametrize("name", NAMES)
def test_factor2_unet_equals_reference_across_sizes(name):
    """One handle, latent size changing between calls (as hires fix does): each output matches the reference."""
    unet = ch.build(name)
    cases = []
    for latent in [(16, 16), (24, 32), (16, 16)]:
        args, kwargs = ch.inputs(unet, name, *latent)
        with ch.reference_todo(unet, name, latent, LEVEL1_DS[name], 2):
            ref = ch.run(unet, args, kwargs)
        cases.append((args, kwargs, ref, ch.run(unet, args, kwargs)))
    with lib_todo.patched(unet, TWO) as handle:
        for args, kwargs, ref, base in cases:
            out = ch.run(unet, args, kwargs)
            assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
            assert not torch.allclose(out, base, atol=1e-4)
        assert handle.applied == {1: 2.0}


def _expected_kv(name: str, latent: tuple[int, int], factor: float) -> dict[int, int]:
    """query tokens -> key/value tokens on both ToDo levels, computed without lib_todo."""
    levels = (LEVEL1_DS[name], 2 * LEVEL1_DS[name])
    out = {}
    for ds in levels:
        h, w = ch.grid_after(latent, ds)
        out[h * w] = ch.ceil_div(h, factor) * ch.ceil_div(w, factor)
    return out


def _check_odd_run(name: str, latent: tuple[int, int], settings: TodoSettings, batch: int) -> None:
    unet, args, kwargs = _setup(name, latent, batch)
    factor = settings.factor
    with a1111_skip_resize(), lib_todo.patched(unet, settings) as handle, ch.kv_capture(unet) as calls:
        out = ch.run(unet, args, kwargs)
    assert out.shape == (batch, 4, *latent)
    assert torch.isfinite(out).all()
    expected = _expected_kv(name, latent, factor)
    acting = {lvl + 1 for lvl, (q, kv) in enumerate(expected.items()) if kv < q}
    assert set(handle.applied) == acting and acting
    assert all(f == factor for f in handle.applied.values())
    seen = set()
    for q, kv in calls:
        assert kv == expected.get(q, q), f"attn1 with {q} query tokens got {kv} key/value tokens"
        seen.add(q)
    assert set(expected) <= seen
    ch.assert_no_hooks(unet)


@pytest.mark.parametrize("latent", [(65, 45), (9, 9)])
@pytest.mark.parametrize("name", NAMES)
def test_odd_latents_run(name, latent):
    _check_odd_run(name, latent, BOTH, batch=1)


@pytest.mark.parametrize(("name", "factor"), [("ldm-sd15", 8), ("ldm-sdxl", 4)])
def test_1080p_latent_runs(name, factor):
    """1920x1080 px: latent 135x240 (factors 8 and 4 keep the big level-1 attention cheap on CPU)."""
    assert [level_grid((135, 240), ds)[0] for ds in (1, 2, 4, 8)] == [135, 68, 34, 17]
    _check_odd_run(name, (135, 240), TodoSettings(factor=factor, factor_level2=factor), batch=1)


def test_sdxl_first_attention_level_is_half():
    unet, args, kwargs = _setup("ldm-sdxl", (32, 32), batch=1)
    assert layout_of(unet).attention_ds == (2, 4)
    with lib_todo.patched(unet, TWO) as handle, ch.kv_capture(unet) as calls:
        ch.run(unet, args, kwargs)
    assert handle.applied == {1: 2.0}
    half = [kv for q, kv in calls if q == 16 * 16]
    assert half == [16 * 16 // 4] * 5  # every /2 attn1 sees a quarter of the tokens as context
    assert [kv for q, kv in calls if q == 8 * 8] == [8 * 8] * 6  # /4 (level 2, factor 1) untouched
    assert len(calls) == 11  # and there is no /1 attention at all


@pytest.mark.parametrize("name", NAMES)
def test_apply_twice_equals_once(name):
    unet, args, kwargs = _setup(name)
    first = lib_todo.apply(unet, BOTH)
    once = ch.run(unet, args, kwargs)
    count = ch.pre_hook_count(unet)
    assert count == 1 + len(ch.attn1_modules(unet))
    second = lib_todo.apply(unet, BOTH)
    assert ch.pre_hook_count(unet) == count
    assert torch.equal(ch.run(unet, args, kwargs), once)
    first.remove()  # a stale handle must not take the live hooks with it
    assert ch.pre_hook_count(unet) == count
    second.remove()
    ch.assert_no_hooks(unet)


def test_hundred_apply_remove_cycles_leave_no_hook():
    unet, args, kwargs = _setup("ldm-sd15")
    base = ch.run(unet, args, kwargs)
    for i in range(100):
        if i % 2:
            with lib_todo.patched(unet, BOTH):
                assert lib_todo.has_hooks(unet)
        else:
            lib_todo.apply(unet, BOTH).remove()
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


@pytest.mark.parametrize("name", NAMES)
def test_exception_inside_patched_leaves_no_hook(name):
    unet, args, kwargs = _setup(name)
    with ch.raising_forward_hook(unet.output_blocks[3], RuntimeError("boom")):
        with pytest.raises(RuntimeError, match="boom"):
            with lib_todo.patched(unet, BOTH):
                assert lib_todo.has_hooks(unet)
                ch.run(unet, args, kwargs)
    ch.assert_no_hooks(unet)


def test_remove_without_handle():
    unet, args, kwargs = _setup("ldm-sd15")
    base = ch.run(unet, args, kwargs)
    lib_todo.apply(unet, BOTH)  # handle dropped
    gc.collect()
    assert not torch.equal(ch.run(unet, args, kwargs), base)
    assert lib_todo.remove(unet) == 1 + len(ch.attn1_modules(unet))
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


@pytest.mark.parametrize("name", NAMES)
def test_caller_context_is_kept(name):
    unet, args, kwargs = _setup(name)
    h, w = ch.grid_after((16, 16), LEVEL1_DS[name])
    attn = ch.attn1_seeing(unet, args, kwargs, h * w)[0]
    dim = attn.to_q.in_features
    gen = torch.Generator().manual_seed(7)
    x, bank = torch.randn(2, h * w, dim, generator=gen), torch.randn(2, 3 * h * w, dim, generator=gen)
    with torch.no_grad():
        plain = (attn(x, context=bank), attn(x, bank), attn(x))
        with lib_todo.patched(unet, TWO):
            ch.run(unet, args, kwargs)  # sets the latent size the hooks act on
            hooked = (attn(x, context=bank), attn(x, bank), attn(x))
    assert torch.equal(hooked[0], plain[0])
    assert torch.equal(hooked[1], plain[1])
    assert not torch.allclose(hooked[2], plain[2], atol=1e-4)  # without a context ToDo does act


def _tomesd_run(order: str):
    unet, args, kwargs = _setup("ldm-sd15")
    holder = ch.LdmHolder(unet)
    if order == "todo first":
        handle = lib_todo.apply(unet, BOTH)
        tomesd.apply_patch(holder, ratio=0.5, max_downsample=1, use_rand=False)
    else:  # A1111 applies token merging before scripts' process() runs
        tomesd.apply_patch(holder, ratio=0.5, max_downsample=1, use_rand=False)
        handle = lib_todo.apply(unet, BOTH)
    with ch.kv_capture(unet) as calls:
        out = ch.run(unet, args, kwargs)
    assert torch.isfinite(out).all()
    merged = [(q, kv) for q, kv in calls if q == 128]  # level 1: 256 tokens, half merged by ToMe
    assert len(merged) == 5 and all(kv == 128 for _, kv in merged)
    assert [kv for q, kv in calls if q == 64] == [16] * 5  # level 2, not merged: downsampled 8x8 -> 4x4
    assert handle.applied == {2: 2.0}
    tomesd.remove_patch(holder)
    handle.remove()
    ch.assert_no_hooks(unet)


def test_tomesd_merged_layers_left_alone():
    _tomesd_run("todo first")


def test_tomesd_first_then_todo_still_acts():
    _tomesd_run("tomesd first")


def test_step_window():
    unet, args, kwargs = _setup("ldm-sd15")
    base = ch.run(unet, args, kwargs)
    with lib_todo.patched(unet, TodoSettings(factor=2, factor_level2=2, start=0.25, stop=0.75)) as handle:
        for fraction in (0.0, 0.2, 0.75, 0.9, 1.0):
            handle.set_progress(fraction)
            assert torch.equal(ch.run(unet, args, kwargs), base), fraction
        for fraction in (0.25, 0.5, 0.74):
            handle.set_progress(fraction)
            assert not torch.allclose(ch.run(unet, args, kwargs), base, atol=1e-4), fraction


@pytest.mark.parametrize(("name", "acting"), [("ldm-sd15", {1: 2.0}), ("ldm-sdxl", {1: 2.0, 2: 2.0})])
def test_auto_identical_at_native_acts_at_double(name, acting):
    """Default settings (auto). The native size is set to 128 px (latent 16) to keep the UNet small."""
    unet = ch.build(name)
    small = ch.inputs(unet, name, 16, 16)
    double = ch.inputs(unet, name, 32, 32)
    base_small, base_double = ch.run(unet, *small), ch.run(unet, *double)
    with lib_todo.patched(unet, TodoSettings(), native_px=128) as handle:
        assert torch.equal(ch.run(unet, *small), base_small)
        assert handle.applied == {}
        assert not torch.allclose(ch.run(unet, *double), base_double, atol=1e-4)
        assert handle.applied == acting
    with lib_todo.patched(unet, TodoSettings()) as handle:  # real native size: 512 / 1024 px
        assert torch.equal(ch.run(unet, *double), base_double)
        assert handle.applied == {}


@pytest.mark.parametrize("name", NAMES)
def test_hypertile_wrapped_attn1_is_skipped(name):
    unet, args, kwargs = _setup(name)
    h, w = ch.grid_after((16, 16), LEVEL1_DS[name])
    level1 = ch.attn1_seeing(unet, args, kwargs, h * w)
    assert len(level1) == 5
    for attn in level1:
        attn.forward = ch.hypertile_like(attn, h, w)
    level2_ds = 2 * LEVEL1_DS[name]
    with ch.reference_todo(unet, name, (16, 16), level2_ds, 2):
        ref = ch.run(unet, args, kwargs)  # wrappers on level 1, level 2 downsampled by the reference
    with lib_todo.patched(unet, BOTH) as handle:
        out = ch.run(unet, args, kwargs)
    assert handle.applied == {2: 2.0}
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    with lib_todo.patched(unet, TWO) as handle:  # only level 1 asked for: nothing to do
        only_wrapped = ch.run(unet, args, kwargs)
    assert handle.applied == {}
    assert torch.equal(only_wrapped, ch.run(unet, args, kwargs))


@pytest.mark.parametrize("name", NAMES)
def test_composes_with_class_forward_swap(name):
    """An attention optimiser that swaps CrossAttention.forward (A1111's sdp) still gets ToDo's context."""
    unet, args, kwargs = _setup(name, (16, 24))
    with ch.sdp_cross_attention():
        with ch.reference_todo(unet, name, (16, 24), LEVEL1_DS[name], 2):
            ref = ch.run(unet, args, kwargs)
        base = ch.run(unet, args, kwargs)
        with lib_todo.patched(unet, TWO):
            out = ch.run(unet, args, kwargs)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, base, atol=1e-4)
