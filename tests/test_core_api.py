"""The public API's conveniences: what `apply` accepts, and the step window driven from a diffusers pipeline."""

from types import SimpleNamespace

import core_helpers as ch
import torch

import lib_todo
from lib_todo import TodoSettings


def test_apply_finds_the_unet_in_a_pipeline_or_a1111_model():
    unet = ch.build("ldm-sd15")
    for holder in (SimpleNamespace(unet=unet), SimpleNamespace(model=SimpleNamespace(diffusion_model=unet))):
        handle = lib_todo.apply(holder, TodoSettings(factor=2))
        assert handle.unet is unet and lib_todo.has_hooks(unet)
        assert lib_todo.remove(holder) > 0
        assert not lib_todo.has_hooks(unet)


def test_window_starting_later_is_closed_until_progress_is_told():
    unet = ch.build("sd15")
    args, kwargs = ch.inputs(unet, "sd15", 16, 16)
    base = ch.run(unet, args, kwargs)
    with lib_todo.patched(unet, TodoSettings(factor=2, start=0.5)) as handle:
        assert torch.equal(ch.run(unet, args, kwargs), base)
        handle.set_progress(0.5)
        assert not torch.equal(ch.run(unet, args, kwargs), base)


def test_diffusers_callback_moves_the_window_after_each_step():
    unet = ch.build("sd15")
    pipe = SimpleNamespace(unet=unet, num_timesteps=4)
    with lib_todo.patched(pipe, TodoSettings(factor=2, stop=0.5)) as handle:
        seen = []
        for step in range(4):
            seen.append(handle.state.active)
            assert handle.diffusers_callback(pipe, step, 999 - step, {"latents": 1}) == {"latents": 1}
    assert seen == [True, True, False, False]  # steps 0 and 1 of 4 are inside stop=0.5
