"""PassState: one live object per pass, whatever copies a host makes; and why a pass acted nowhere."""

from __future__ import annotations

import copy

from lib_todo import PassState, TodoPlan, TodoSettings
from lib_todo.backends.forge_unet import ForgeAttn1Patch
from lib_todo.layout import AttentionLayout
from lib_todo.state import NEVER_CALLED, NO_GRID, OWN_CONTEXT, REASONS

SD15 = AttentionLayout((1, 2, 4, 8), 64)
LATENT = (16, 16)


def state(**settings) -> PassState:
    return PassState(TodoPlan(TodoSettings(**{"factor": 2, "factor_level2": 1, **settings}), SD15))


def test_copies_of_the_state_and_the_forge_patch_are_the_originals():
    s = state()
    patch = ForgeAttn1Patch(s)
    options = {"transformer_options": {"patches": {"attn1_patch": [patch]}}}
    cloned = copy.deepcopy(options)  # what Forge's ModelPatcher.clone() does to model_options
    assert cloned["transformer_options"]["patches"]["attn1_patch"][0] is patch
    assert copy.copy(s) is s and copy.deepcopy(s) is s
    s.set_progress(0.99)  # steering the original steers every copy
    s.set_progress(0.0)
    assert cloned["transformer_options"]["patches"]["attn1_patch"][0].state.active


def test_targets_are_counted_and_a_closed_pass_acts_no_more():
    s = state(stop=0.5)
    assert s.target(256, LATENT) == (16, 16, 2.0, 1)
    assert s.target(64, LATENT) is None  # level 2 at factor 1: planned to stay whole
    assert s.calls == 1 and s.applied == {1: 2.0} and s.silence_reason() is None
    s.set_progress(0.5)
    assert s.target(256, LATENT) is None
    s.set_progress(0.0)
    s.close()
    s.set_progress(0.0)
    assert not s.active and s.target(256, LATENT) is None and s.calls == 1


def test_silence_reasons():
    never = state()
    never.latent_hw = LATENT
    assert never.silence_reason() == NEVER_CALLED
    resized = state()
    resized.latent_hw = LATENT
    assert resized.target(100, LATENT) is None  # 100 tokens sit on no level of a 16x16 latent
    assert resized.silence_reason() == REASONS[NO_GRID]
    banks = state()
    banks.latent_hw = LATENT
    for _ in range(3):
        banks.skip(OWN_CONTEXT)
    banks.target(100, LATENT)
    assert banks.silence_reason() == REASONS[OWN_CONTEXT]  # the most frequent reason is given
    native = state(factor=0, factor_level2=0)  # auto at native size asks for nothing
    native.latent_hw = (8, 8)
    assert native.target(64, (8, 8)) is None and native.silence_reason() is None
    window = state(start=0.9)
    window.latent_hw = LATENT
    assert window.target(256, LATENT) is None
    assert "step window" in window.silence_reason()
