"""The webui script (scripts/todo.py) in the A1111 1.10 / Forge stand-in, on real ldm UNets."""

from __future__ import annotations

from copy import copy

import pytest
import torch

import lib_todo
from lib_todo.webui.script_args import ARG_NAMES

TODO = "ToDo"
ON_F2 = [True, 2, 1]  # factor 2 on level 1, level 2 off; the remaining args keep their defaults


def level1_kv_tokens(unet: torch.nn.Module, p) -> list[tuple[bool, int]]:
    """Record (is_hr_pass, tokens that keys are computed from) at the first level-1 self-attention."""
    seen: list[tuple[bool, int]] = []
    attn = next(m.attn1 for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    attn.to_k.register_forward_pre_hook(lambda m, a: seen.append((bool(p.is_hr_pass), a[0].shape[1])))
    return seen


def fail_mid_sampling(webui, args: list) -> None:
    """Run a job that raises at its second denoiser step, as an interrupt by exception would."""
    webui.inject_failure(step=1)
    with pytest.raises(webui.InjectedFailure):
        webui.txt2img({TODO: args})
    webui.sd_samplers.clear_failure()


def todo_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k.startswith("ToDo")}


def image(run) -> torch.Tensor:
    return run.processed.images[0]


@pytest.fixture
def a1111(webui):
    webui.load_extension_script()
    webui.set_model(webui.make_a1111_model())
    return webui


def unet_of(webui) -> torch.nn.Module:
    return webui.shared.sd_model.model.diffusion_model


def test_ui_builds_in_blocks_with_documented_arg_order(a1111):
    script = a1111.script(TODO)
    controls = a1111.runner().inputs[script.args_from : script.args_to]
    assert len(controls) == len(ARG_NAMES) == 8
    kinds = [type(c).__name__ for c in controls]
    assert kinds == ["InputAccordion", "Slider", "Slider", "Dropdown", "Slider", "Slider", "Dropdown", "Slider"]
    defaults = lib_todo.TodoSettings()
    assert [c.value for c in controls] == [False] + [getattr(defaults, n) for n in ARG_NAMES[1:]]
    assert controls[3].choices and {c[0] if isinstance(c, tuple) else c for c in controls[3].choices} == set(
        lib_todo.METHODS
    )
    img2img = a1111.runner(is_img2img=True).inputs
    s2 = a1111.script(TODO, is_img2img=True)
    assert [c.visible for c in img2img[s2.args_from : s2.args_to]][6:] == [False, False]  # no hires in img2img
    assert controls[0].elem_id.startswith("script_txt2img_todo_enabled")


def test_hires_job_installs_each_pass_and_window_restarts(a1111):
    p = a1111.make_txt2img(
        {TODO: [True, 2, 1, "nearest-exact", 0.0, 0.5, "own factor", 4]},
        enable_hr=True,
        hr_scale=2,
        hr_second_pass_steps=4,
        steps=4,
        denoising_strength=1.0,
    )
    seen = level1_kv_tokens(unet_of(a1111), p)
    a1111.run_job(p)
    a1111.assert_no_errors()
    first = [n for hr, n in seen if not hr]
    hires = [n for hr, n in seen if hr]
    # 64 px -> latent 8x8 = 64 tokens, factor 2 -> 16; hires 128 px -> 256 tokens, own factor 4 -> 16
    assert first[0] == 16 and first[-1] == 64, first
    assert hires[0] == 16 and hires[-1] == 256, hires
    assert first == sorted(first) and hires == sorted(hires)  # the window closes once per pass, then stays shut
    assert not lib_todo.has_hooks(unet_of(a1111))


def test_infotext_records_what_ran_per_pass(a1111):
    run = a1111.txt2img({TODO: [True, 2, 1, "nearest-exact", 0.0, 1.0, "same"]}, enable_hr=True, hr_scale=2)
    params = todo_params(a1111.params(run.processed))
    assert params["ToDo factor"] == "2"
    assert params["ToDo applied"] == "2x/1x, hires 2x/1x"
    only = a1111.txt2img({TODO: [True, 2, 1, "nearest-exact", 0.0, 1.0, "only"]}, enable_hr=True, hr_scale=2)
    assert a1111.params(only.processed)["ToDo applied"] == "hires 2x/1x"


def test_off_factor1_and_auto_at_native_are_bit_identical_to_no_extension(webui):
    webui.set_model(webui.make_a1111_model())
    webui.start()  # no extension loaded
    baseline = image(webui.txt2img())
    webui.load_extension_script()
    for args in ([False, 4], [True, 1, 1], [True, 0, 0]):  # off, factor 1, auto at native size
        run = webui.txt2img({TODO: args})
        assert torch.equal(image(run), baseline), args
        assert todo_params(webui.params(run.processed)) == {}
    on = webui.txt2img({TODO: ON_F2})
    assert not torch.equal(image(on), baseline)
    webui.assert_no_errors()


def test_exception_mid_sampling_leaves_the_next_job_clean(a1111):
    off = image(a1111.txt2img({TODO: [False]}))
    fail_mid_sampling(a1111, ON_F2)
    assert lib_todo.has_hooks(unet_of(a1111))  # postprocess was skipped, as in the webui
    after = a1111.txt2img({TODO: [False]})
    assert torch.equal(image(after), off)
    assert not lib_todo.has_hooks(unet_of(a1111))


def test_model_load_and_ui_reload_remove_hooks(a1111):
    fail_mid_sampling(a1111, ON_F2)
    a1111.set_model(a1111.shared.sd_model)  # same-config checkpoint switch reuses the model object
    assert not lib_todo.has_hooks(unet_of(a1111))
    fail_mid_sampling(a1111, ON_F2)
    a1111.unload()
    assert not lib_todo.has_hooks(unet_of(a1111))
    callbacks = a1111.script_callbacks
    names = [c.callback.__name__ for lst in callbacks.callback_map.values() for c in lst]
    assert "on_cfg_denoiser" not in names and "on_model_loaded" not in names


@pytest.mark.parametrize(
    "args",
    [
        [True, 2, 1, "avg-pool", 0.1, 0.9, "own factor", 3],
        [True, 2, 0, "max-pool", 0.0, 0.6, "only", 0],
        [True, 3, 2, "bilinear", 0.25, 1.0, "off", 0],
        [True, 2, 1, "nearest", 0.0, 1.0, "same", 0],
    ],
)
def test_infotext_round_trip_restores_every_control(a1111, args):
    run = a1111.txt2img({TODO: args}, enable_hr=True, hr_scale=2, width=128, height=128)
    infotext = run.processed.infotexts[0]
    script = a1111.script(TODO)
    pasted = a1111.paste_script_args(infotext)[script.args_from : script.args_to]
    assert pasted == [True, *(float(a) if not isinstance(a, str) else a for a in args[1:])]
    from_api = a1111.api_script_args(infotext)
    assert [from_api[i] for i in range(script.args_from, script.args_to)] == pasted


def test_paste_without_todo_switches_off_and_nonsense_restores_nothing(a1111, capsys):
    script = a1111.script(TODO)
    controls = a1111.runner().inputs[script.args_from : script.args_to]
    pasted = a1111.paste("a cat\nSteps: 20, Seed: 1, Size: 64x64")
    assert pasted[controls[0]] is False
    assert all(c not in pasted for c in controls[1:])
    nonsense = a1111.paste('a cat\nSteps: 20, ToDo factor: banana, ToDo method: "avg-pool", ToDo stop: 7')
    assert nonsense[controls[0]] is False
    assert all(c not in nonsense for c in controls[1:])
    assert "banana" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, ok",
    [
        (["true", "2", None, "nearest_exact", "0", "1", "same", "auto"], True),
        ([1, 2.0, "1", "avg_pool"], True),
        ([True, "banana"], False),
        ([True, 2, 1, "cubic"], False),
        ([True, 2, 1, "nearest-exact", 0.8, 0.2], False),
        ([True, 12], False),
        (["maybe", 2], False),
    ],
)
def test_api_untyped_and_bad_args(a1111, capsys, args, ok):
    off = image(a1111.txt2img({TODO: [False]}, api=True))
    run = a1111.txt2img({TODO: args}, api=True)
    a1111.assert_no_errors()
    params = todo_params(a1111.params(run.processed))
    out = capsys.readouterr().out
    if ok:
        assert params["ToDo factor"] == "2" and not torch.equal(image(run), off)
    else:
        assert params == {} and torch.equal(image(run), off)
        assert "[ToDo]" in out and "accepted" in out and "off for this job" in out


def test_xyz_axes_exist_before_the_ui_callbacks(webui):
    """An API-only start builds X/Y/Z plot's axis list before `before_ui` runs: the axes must be there as soon as
    the script is loaded (X/Y/Z plot, a webui script, is loaded first)."""
    webui.load_extension_script(start=False)
    labels = [o.label for o in webui.xyz_grid.axis_options]
    expected = [f"[ToDo] {axis[0]}" for axis in webui.extension_modules[0].AXES]
    assert [label for label in labels if label.startswith("[ToDo]")] == expected
    webui.start()  # before_ui adds nothing twice
    assert [o.label for o in webui.xyz_grid.axis_options] == labels


def test_every_xyz_axis_applies_to_the_job_only(a1111):
    xyz = a1111.xyz_grid
    options = {o.label: o for o in xyz.axis_options if o.label.startswith("[ToDo]")}
    assert len(options) == 8
    values = {
        "[ToDo] Enabled": "False",
        "[ToDo] Factor": 3.0,
        "[ToDo] Level 2 factor": 2.0,
        "[ToDo] Method": "avg-pool",
        "[ToDo] Start at": 0.2,
        "[ToDo] Stop at": 0.8,
        "[ToDo] Hires pass": "only",
        "[ToDo] Hires factor": 4.0,
    }
    opts_before = dict(a1111.shared.opts.data)
    p = a1111.make_txt2img({TODO: [False]})
    for label, x in values.items():
        pc = copy(p)
        options[label].apply(pc, x, [x])
        assert pc.todo_overrides and not hasattr(p, "todo_overrides"), label
    assert a1111.shared.opts.data == opts_before
    with pytest.raises(ValueError, match="factor"):
        options["[ToDo] Factor"].confirm(p, [2.0, 0.5])
    cells = []
    for x in (1.0, 2.0):
        pc = copy(p)
        options["[ToDo] Factor"].apply(pc, x, [1.0, 2.0])
        cells.append(a1111.process_images(pc))
    assert todo_params(a1111.params(cells[0])) == {}  # factor 1 = off, even though the axis switches ToDo on
    assert a1111.params(cells[1])["ToDo factor"] == "2"
    assert not torch.equal(cells[0].images[0], cells[1].images[0])


def test_hypertile_unet_keeps_todo_off(a1111, capsys):
    off = image(a1111.txt2img({TODO: [False]}))
    a1111.shared.opts.data["hypertile_enable_unet"] = True
    run = a1111.txt2img({TODO: ON_F2})
    assert torch.equal(image(run), off) and todo_params(a1111.params(run.processed)) == {}
    assert "HyperTile" in capsys.readouterr().out


def test_img2img_and_sdxl_model(webui):
    webui.load_extension_script()
    webui.set_model(webui.make_a1111_model("sdxl"))
    p = webui.make_img2img({TODO: ON_F2}, width=128, height=128)
    seen = level1_kv_tokens(unet_of(webui), p)
    processed = webui.run_job(p)
    webui.assert_no_errors()
    # SDXL's first attention level is /2: latent 16x16 -> 8x8 = 64 tokens, factor 2 -> 16
    assert seen and all(n == 16 for _, n in seen)
    assert webui.params(processed)["ToDo applied"] == "2x/1x"


@pytest.mark.parametrize("flavour", ["forge", "reforge", "neo"])
def test_forge_patches_a_clone_per_pass_and_restores(webui, flavour):
    # Forge has no ldm/sgm; Neo also removed ldm_patched and cut sd_hijack down: the script imports none of them.
    with webui.forbid_imports("ldm", "sgm", "ldm_patched", "modules.sd_hijack", "modules.sd_hijack_optimizations"):
        webui.load_extension_script(forge_loader=True)
    model = webui.set_model(webui.make_forge_model(flavour=flavour, legacy=flavour == "reforge"))
    original = model.forge_objects.unet
    p = webui.make_txt2img(
        {TODO: [True, 2, 1, "nearest-exact", 0.0, 1.0, "own factor", 4]},
        enable_hr=True,
        hr_scale=2,
        denoising_strength=1.0,
    )
    seen = level1_kv_tokens(original.model.diffusion_model, p)
    processed = webui.run_job(p)
    webui.assert_no_errors()
    assert {n for hr, n in seen if not hr} == {16} and {n for hr, n in seen if hr} == {16}
    assert webui.params(processed)["ToDo applied"] == "2x/1x, hires 4x/1x"
    assert model.forge_objects.unet is original
    assert not original.model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch")


@pytest.mark.parametrize("flavour", ["a1111", "forge"])
def test_refiner_switch_goes_on_with_todo_and_leaves_both_models_clean(webui, flavour):
    """The refiner loads another model mid-pass (A1111 at its switch step; Forge Neo without refiner_fast_sd):
    ToDo goes on on the refiner's UNet for the steps that remain, the infotext says so, and after the job
    neither model keeps a hook or a patched patcher."""
    webui.load_extension_script(forge_loader=flavour == "forge")
    make = webui.make_forge_model if flavour == "forge" else webui.make_a1111_model
    base, refiner = make(seed=0), make(seed=1)
    webui.sd_models.checkpoints.update(base=base, refiner=refiner)
    webui.set_model(base)
    patchers = [m.forge_objects.unet for m in (base, refiner)] if flavour == "forge" else []
    unets = [
        m.forge_objects.unet.model.diffusion_model if flavour == "forge" else m.model.diffusion_model
        for m in (base, refiner)
    ]
    run = webui.txt2img({TODO: ON_F2}, steps=4, refiner_checkpoint="refiner", refiner_switch_at=0.5)
    webui.assert_no_errors()
    params = webui.params(run.processed)
    assert params["Refiner"] == "refiner" and webui.shared.sd_model is refiner
    assert params["ToDo applied"] == "2x/1x, refiner 2x/1x"
    if flavour == "forge":
        assert [m.forge_objects.unet for m in (base, refiner)] == patchers
    else:
        assert not any(lib_todo.has_hooks(u) for u in unets)

    # Each model ran its share of the steps with ToDo: the refiner's UNet saw downsampled keys/values, as the
    # same job without ToDo shows (4x fewer tokens at level 1).
    seen = [level1_kv_tokens(u, run.p) for u in unets]
    counts = []
    for args in (ON_F2, [False]):
        webui.set_model(base)
        webui.txt2img({TODO: args}, steps=4, refiner_checkpoint="refiner", refiner_switch_at=0.5)
        counts.append([{n for _, n in s} for s in seen])
        for s in seen:
            s.clear()
    (todo_base, todo_refiner), (plain_base, plain_refiner) = counts
    assert plain_base == plain_refiner and len(plain_base) == 1
    assert todo_base == todo_refiner == {n // 4 for n in plain_base}
