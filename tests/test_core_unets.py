"""ToDo on real UNets of both families: the ldm UNetModel A1111 runs and diffusers' UNet2DConditionModel,
SD1.5- and SDXL-shaped, at small widths on the CPU in fp32.

What is specific to A1111 (tomesd, HyperTile, optimiser swaps, the step window, auto) is in test_core_ldm.py.
"""

from __future__ import annotations

import core_helpers as ch
import pytest
import torch

import lib_todo
from lib_todo import TodoSettings, level_grid
from lib_todo.bench.unets import a1111_skip_resize
from lib_todo.layout import layout_of

NAMES = ["ldm-sd15", "ldm-sdxl", "sd15", "sdxl"]
LEVEL1_DS = {"ldm-sd15": 1, "ldm-sdxl": 2, "sd15": 1, "sdxl": 2}
LEVEL1_ATTN1 = {"ldm-sd15": 5, "ldm-sdxl": 5, "sd15": 5, "sdxl": 10}  # input + output blocks on level 1
TWO = TodoSettings(factor=2, factor_level2=1)
BOTH = TodoSettings(factor=2, factor_level2=2)



def _late_block(unet: torch.nn.Module) -> torch.nn.Module:
    """A block in the decoder half, where an exception leaves the encoder's hooks already used."""
    return unet.output_blocks[3] if hasattr(unet, "output_blocks") else unet.up_blocks[1]


@pytest.mark.parametrize("name", NAMES)
def test_off_is_bit_identical_and_unhooked(name):
    unet, args, kwargs = ch.setup(name, (24, 32))
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
    unet, args, kwargs = ch.setup(name, (16, 24))
    least = min(4, LEVEL1_ATTN1[name])
    ch.assert_level1_matches_manual_attention(unet, args, kwargs, TWO, (16, 24), LEVEL1_DS[name], least=least)


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
    out = {}
    for ds in (LEVEL1_DS[name], 2 * LEVEL1_DS[name]):
        h, w = ch.grid_after(latent, ds)
        out[h * w] = ch.ceil_div(h, factor) * ch.ceil_div(w, factor)
    return out


def _check_odd_run(name: str, latent: tuple[int, int], settings: TodoSettings, batch: int) -> None:
    unet, args, kwargs = ch.setup(name, latent, batch)
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


@pytest.mark.parametrize(("name", "factor"), [("ldm-sd15", 8), ("ldm-sdxl", 4), ("sd15", 8)])
def test_1080p_latent_runs(name, factor):
    """1920x1080 px: latent 135x240 (factors 8 and 4 keep the big level-1 attention cheap on CPU)."""
    assert [level_grid((135, 240), ds)[0] for ds in (1, 2, 4, 8)] == [135, 68, 34, 17]
    _check_odd_run(name, (135, 240), TodoSettings(factor=factor, factor_level2=factor), batch=1)


@pytest.mark.parametrize("name", ["ldm-sdxl", "sdxl"])
def test_sdxl_first_attention_level_is_half(name):
    unet, args, kwargs = ch.setup(name, (32, 32), batch=1)
    assert layout_of(unet).attention_ds == (2, 4)
    with lib_todo.patched(unet, TWO) as handle, ch.kv_capture(unet) as calls:
        ch.run(unet, args, kwargs)
    assert handle.applied == {1: 2.0}
    half = [kv for q, kv in calls if q == 16 * 16]
    assert half and all(kv == 16 * 16 // 4 for kv in half)  # every /2 attn1 sees a quarter of the tokens
    quarter = [kv for q, kv in calls if q == 8 * 8]
    assert quarter and all(kv == 8 * 8 for kv in quarter)  # /4 (level 2, factor 1) untouched
    assert len(half) + len(quarter) == len(calls)  # and there is no /1 attention at all


@pytest.mark.parametrize("name", NAMES)
def test_apply_twice_equals_once(name):
    unet, args, kwargs = ch.setup(name)
    base = ch.run(unet, args, kwargs)
    first = lib_todo.apply(unet, BOTH)
    once = ch.run(unet, args, kwargs)
    count = ch.pre_hook_count(unet)
    assert count == 1 + len(ch.attn1_modules(unet))
    second = lib_todo.apply(unet, BOTH)
    assert ch.pre_hook_count(unet) == count
    assert torch.equal(ch.run(unet, args, kwargs), once)
    assert not torch.allclose(once, base, atol=1e-4)
    first.remove()  # a stale handle must not take the live hooks with it
    assert ch.pre_hook_count(unet) == count
    second.remove()
    ch.assert_no_hooks(unet)
    assert torch.equal(ch.run(unet, args, kwargs), base)


@pytest.mark.parametrize("name", NAMES)
def test_exception_inside_patched_leaves_no_hook(name):
    unet, args, kwargs = ch.setup(name)
    with ch.raising_forward_hook(_late_block(unet), RuntimeError("boom")):
        with pytest.raises(RuntimeError, match="boom"):
            with lib_todo.patched(unet, BOTH):
                assert lib_todo.has_hooks(unet)
                ch.run(unet, args, kwargs)
    ch.assert_no_hooks(unet)


@pytest.mark.parametrize("name", NAMES)
def test_caller_context_is_kept(name):
    unet, args, kwargs = ch.setup(name)
    h, w = ch.grid_after((16, 16), LEVEL1_DS[name])
    attn = ch.attn1_seeing(unet, args, kwargs, h * w)[0]
    dim = attn.to_q.in_features
    context = ch.CONTEXT_KW[ch.family(name)]
    gen = torch.Generator().manual_seed(7)
    x, bank = torch.randn(2, h * w, dim, generator=gen), torch.randn(2, 3 * h * w, dim, generator=gen)
    with torch.no_grad():
        plain = (attn(x, **{context: bank}), attn(x))
        with lib_todo.patched(unet, TWO):
            ch.run(unet, args, kwargs)  # sets the latent size the hooks act on
            hooked = (attn(x, **{context: bank}), attn(x))
    assert torch.equal(hooked[0], plain[0])
    assert not torch.allclose(hooked[1], plain[1], atol=1e-4)  # without a context ToDo does act
