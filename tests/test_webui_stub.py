"""The webui stand-in (tests/webui_stub) behaves like A1111 1.10 / Forge where the extension depends on it."""

from __future__ import annotations

import sys

import pytest
import torch

PROBE = """
import gradio as gr
from modules import scripts

LOG = []
ACTIONS = {}


class Probe(scripts.Script):
    def title(self):
        return "Probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(False, label="on"), gr.Slider(0, 10, value=3, step=1, label="n")]

    def _hook(self, name, p, args, kwargs):
        info = {k: tuple(v.shape) for k, v in kwargs.items() if hasattr(v, "shape")}
        LOG.append((name, bool(getattr(p, "is_hr_pass", False)), tuple(args), info))
        if name in ACTIONS:
            ACTIONS[name](p, *args, **kwargs)

    def process(self, p, *args):
        self._hook("process", p, args, {})

    def process_batch(self, p, *args, **kwargs):
        self._hook("process_batch", p, args, kwargs)

    def process_before_every_sampling(self, p, *args, **kwargs):
        self._hook("process_before_every_sampling", p, args, kwargs)

    def post_sample(self, p, ps, *args):
        self._hook("post_sample", p, args, {})

    def postprocess(self, p, processed, *args):
        self._hook("postprocess", p, args, {})
"""

ON = [True, 5]  # the probe's script args


def probe(webui, model=None):
    module = webui.load_script_text(PROBE)
    webui.start()
    webui.set_model(model if model is not None else webui.make_a1111_model())
    return module


def names(log):
    return [(name, hr) for name, hr, _, _ in log]


def test_txt2img_hires_hook_order_args_and_pass_inputs(webui):
    module = probe(webui)
    script = webui.script("Probe")
    assert (script.args_from, script.args_to) == (1, 3)  # inputs[0] is the selectable-script dropdown
    run = webui.txt2img({"Probe": ON}, enable_hr=True, hr_scale=1.5)
    webui.assert_no_errors()
    assert names(module.LOG) == [
        ("process", False),
        ("process_batch", False),
        ("process_before_every_sampling", False),
        ("process_before_every_sampling", True),
        ("post_sample", False),
        ("postprocess", False),
    ]
    assert all(args == tuple(ON) for _, _, args, _ in module.LOG)
    first, hires = [info for name, _, _, info in module.LOG if name == "process_before_every_sampling"]
    assert first["x"] == first["noise"] == (1, 4, 8, 8)
    assert hires["x"] == hires["noise"] == (1, 4, 12, 12)  # 64 px * 1.5 = 96 px
    assert (run.p.hr_upscale_to_x, run.p.hr_upscale_to_y) == (96, 96)
    assert run.processed.images[0].shape == (4, 12, 12)


def test_img2img_hook_order_and_step_count(webui):
    module = probe(webui)
    steps = webui.record_cfg_steps()
    webui.img2img({"Probe": ON}, steps=4, denoising_strength=0.5)
    webui.assert_no_errors()
    order = [name for name, _ in names(module.LOG)]
    assert order.index("process_batch") < order.index("process_before_every_sampling") < order.index("post_sample")
    (pbes,) = [info for name, _, _, info in module.LOG if name == "process_before_every_sampling"]
    assert pbes["x"] == pbes["noise"] == (1, 4, 8, 8)  # x is the init latent
    assert steps == [(False, 0, 3), (False, 0, 3), (False, 1, 3)]  # t_enc + 1 = int(0.5 * 4) + 1 steps


def test_cfg_denoiser_steps_restart_in_hires_pass(webui):
    probe(webui)
    steps = webui.record_cfg_steps()
    webui.txt2img(steps=3, enable_hr=True, hr_second_pass_steps=2)
    # k-diffusion reports step i after the i-th denoiser call: the denoiser sees 0, 0, 1, ... per pass
    assert steps == [(False, 0, 3), (False, 0, 3), (False, 1, 3), (True, 0, 2), (True, 0, 2)]
    assert webui.shared.state.sampling_steps == 2


def test_postprocess_skipped_when_sampling_raises(webui):
    module = probe(webui)
    webui.inject_failure(step=1, hires=True)
    with pytest.raises(webui.InjectedFailure):
        webui.txt2img({"Probe": ON}, enable_hr=True)
    assert names(module.LOG)[-1] == ("process_before_every_sampling", True)
    order = [name for name, _ in names(module.LOG)]
    assert "postprocess" not in order and "post_sample" not in order


def test_a_failing_hook_is_reported_not_raised(webui):
    module = probe(webui)
    module.ACTIONS["process"] = lambda p, *args: 1 / 0
    run = webui.txt2img({"Probe": ON})
    assert run.processed.images
    (error,) = webui.errors()
    assert "Error running process" in error.message and isinstance(error.exception, ZeroDivisionError)


def test_infotext_create_and_parse_round_trip(webui):
    module = probe(webui)
    tricky = 'a, b: c "quoted"'
    written = {"Probe text": tricky, "Probe lines": "one\ntwo", "Probe none": None}
    module.ACTIONS["process"] = lambda p, *args, **kwargs: p.extra_generation_params.update(written)
    run = webui.txt2img({"Probe": ON}, batch_size=2, seed=5)
    webui.assert_no_errors()
    text = run.processed.infotexts[0]
    assert f"Probe text: {webui.infotext_utils.quote(tricky)}" in text and "Probe none" not in text
    for i in (0, 1):
        params = webui.params(run.processed, i)
        assert params["Probe text"] == tricky and params["Probe lines"] == "one\ntwo"
        assert params["Seed"] == str(5 + i) and params["Size-1"] == "64" and params["Prompt"] == "a photo of a cat"


def test_paste_converts_like_connect_paste(webui):
    import gradio as gr

    parse = webui.parse_generation_parameters("p\nSteps: 3, Flag: False, Count: 4, Name: x, Other: True")
    with gr.Blocks():
        flag, other, count, name = gr.Checkbox(True), gr.Checkbox(False), gr.Slider(value=1), gr.Textbox("y")
        missing = gr.Textbox("keep")
    fields = [
        (flag, "Flag"),
        (other, "Other"),
        (count, "Count"),
        (name, lambda d: d["Name"] + "!"),
        (missing, "Absent"),
        (name, lambda d: gr.update(value="upd")),
    ]
    unchanged = webui.infotext_utils.UNCHANGED
    assert webui.infotext_utils.apply_paste(fields, parse) == [False, True, 4.0, "x!", unchanged, "upd"]


def test_script_loading_like_a1111(webui, tmp_path):
    source = (
        "import sys\nfrom modules import scripts\n"
        "SEEN = (__name__, sys.path[0])\n"
        "class A(scripts.Script):\n    def title(self):\n        return 'A'\n"
    )
    module = webui.load_script_text(source, "ext_a.py", "ext-a")
    name, ext_dir = module.SEEN
    assert name == "ext_a.py" and ext_dir.endswith("ext-a")
    assert ext_dir not in sys.path
    assert [d.script_class.__module__ for d in webui.scripts.scripts_data] == ["xyz_grid.py", "ext_a.py"]
    # as in A1111 1.9/1.10, script modules are not in sys.modules: a string-annotated dataclass fails to load
    broken = "from __future__ import annotations\nfrom dataclasses import dataclass\n@dataclass\nclass D:\n    x: int\n"
    with pytest.raises(AssertionError, match="could not load"):
        webui.load_script_text(broken, "ext_b.py", "ext-b")
    assert webui.load_script_text(broken, "ext_c.py", "ext-c", forge_loader=True).D(1).x == 1  # Forge's loader


def test_forge_resets_patches_per_pass_and_runs_attn1_patches(webui):
    model = webui.make_forge_model()
    module = probe(webui, model)
    base = model.forge_objects_after_applying_lora.unet
    seen_at_hook, calls = [], []

    def patch(n, context, value, extra):
        calls.append((extra["original_shape"], extra["block"], extra["transformer_index"], extra["cond_or_uncond"]))
        kv = context[:, ::2]  # keys/values from every other token, as ToDo does
        return n, kv, kv

    def install(p, *args, **kwargs):
        seen_at_hook.append(p.sd_model.forge_objects.unet is base)
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_model_attn1_patch(patch)
        p.sd_model.forge_objects.unet = unet

    module.ACTIONS["process_before_every_sampling"] = install
    patched = webui.txt2img({"Probe": ON}, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1)
    webui.assert_no_errors()
    # current Forge: first pass; hires = before_hr + hook (still the first pass's patcher), reset, hook again
    assert seen_at_hook == [True, False, True]
    assert not base.model_options["transformer_options"]  # the base patcher was never patched
    shapes = {shape[-1] for shape, _, _, _ in calls}
    assert shapes == {8, 12} and all(shape[0] == 2 for shape, _, _, _ in calls)  # cond + uncond batch
    assert {block[0] for _, block, _, _ in calls} == {"input", "middle", "output"}
    assert calls[0][3] == [1, 0]  # Forge batches uncond first

    module.ACTIONS.clear()
    plain = webui.txt2img({"Probe": ON}, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1)
    assert not torch.allclose(patched.processed.images[0], plain.processed.images[0])


def test_forge_patch_must_keep_value_equal_to_context(webui):
    model = webui.make_forge_model()
    module = probe(webui, model)

    def install(p, *args, **kwargs):
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_model_attn1_patch(lambda n, c, v, extra: (n, c, v * 2))
        p.sd_model.forge_objects.unet = unet

    module.ACTIONS["process_before_every_sampling"] = install
    with pytest.raises(AssertionError, match="value != context"):
        webui.txt2img({"Probe": ON})


def test_api_defaults_rerun_ui_and_cast_infotext_like_the_api(webui):
    probe(webui)
    assert webui.script_args(api=True)[1:3] == [False, 3]
    runner = webui.runner()
    on, n = runner.script("Probe").controls
    runner.infotext_fields += [(on, "Probe on"), (n, "Probe n")]
    text = "p\nSteps: 3, Sampler: Euler, Probe on: False, Probe n: 4"
    assert webui.api_script_args(text) == {0: "None", 1: True, 2: 4}  # the API casts: bool("False") is True
    assert webui.paste_script_args(text)[:3] == [0, False, 4.0]


def test_stub_modules_do_not_leak():
    assert "modules" not in sys.modules and not any(name.endswith(".py") for name in sys.modules)
    assert not any(path.endswith("webui_stub") for path in sys.path)


def test_input_accordion_is_a_hidden_checkbox_that_owns_an_accordion(webui):
    import gradio as gr

    with gr.Blocks():
        with webui.ui_components.InputAccordion(True, label="ToDo", elem_id="todo") as enabled:
            slider = gr.Slider(value=1)
    assert isinstance(enabled, gr.Checkbox) and enabled.value is True and enabled.visible is False
    assert (enabled.elem_id, enabled.accordion.elem_id, enabled.accordion.open) == ("todo-checkbox", "todo", True)
    assert slider.parent.parent is enabled.accordion  # gradio wraps form fields in a Form


def test_reforge_flavour_resets_before_the_single_hires_hook(webui):
    model = webui.make_forge_model(flavour="reforge")
    module = probe(webui, model)
    base = model.forge_objects_after_applying_lora.unet
    seen = []

    def install(p, *args, **kwargs):
        seen.append(p.sd_model.forge_objects.unet is base)
        p.sd_model.forge_objects.unet = p.sd_model.forge_objects.unet.clone()

    module.ACTIONS["process_before_every_sampling"] = install
    webui.txt2img({"Probe": ON}, enable_hr=True, hr_second_pass_steps=1)
    assert seen == [True, True]


def test_forbid_imports_hides_packages_during_load(webui):
    with webui.forbid_imports("ldm"), pytest.raises(AssertionError, match="No module named 'ldm'"):
        webui.load_script_text("import ldm.modules.attention\n", "needs_ldm.py")
    import ldm.modules.attention  # noqa: F401  (back after the block)
