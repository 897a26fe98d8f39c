"""ToDo on the real ldm UNetModel and attention code that A1111 runs, beside what A1111 users run with it
(tomesd, HyperTile, attention optimisers), plus the step window and auto (small widths, CPU, fp32).

What both UNet families share is in test_core_unets.py.
"""

from __future__ import annotations

import gc

import core_helpers as ch
import pytest
import tomesd
import torch

import lib_todo
from lib_todo import TodoSettings

NAMES = ["ldm-sd15", "ldm-sdxl"]
LEVEL1_DS = {"ldm-sd15": 1, "ldm-sdxl": 2}
TWO = TodoSettings(factor=2, factor_level2=1)
BOTH = TodoSettings(factor=2, factor_level2=2)



def test_hundred_apply_remove_cycles_leave_no_hook():
    unet, args, kwargs = ch.setup("ldm-sd15")
    base = ch.run(unet, args, kwargs)
    for i in range(100):
        if i % 2:
            with lib_todo.patched(unet, BOTH):
                assert lib_todo.has_hooks(unet)
        else:
            lib_todo.apply(unet, BOTH).remove()
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


def test_remove_without_handle():
    unet, args, kwargs = ch.setup("ldm-sd15")
    base = ch.run(unet, args, kwargs)
    lib_todo.apply(unet, BOTH)  # handle dropped
    gc.collect()
    assert not torch.equal(ch.run(unet, args, kwargs), base)
    assert lib_todo.remove(unet) == 1 + len(ch.attn1_modules(unet))
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


def _tomesd_run(order: str):
    unet, args, kwargs = ch.setup("ldm-sd15")
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
    unet, args, kwargs = ch.setup("ldm-sd15")
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
    unet, args, kwargs = ch.setup(name)
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
    unet, args, kwargs = ch.setup(name, (16, 24))
    with ch.sdp_cross_attention():
        with ch.reference_todo(unet, name, (16, 24), LEVEL1_DS[name], 2):
            ref = ch.run(unet, args, kwargs)
        base = ch.run(unet, args, kwargs)
        with lib_todo.patched(unet, TWO):
            out = ch.run(unet, args, kwargs)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, base, atol=1e-4)
