"""modules/scripts.py: the `Script` base class, script loading, and the `ScriptRunner` that calls the hooks.

Mirrors A1111 1.10:
- a script file is loaded as a module named by its basename ("todo.py"), with its extension folder put
  first on `sys.path` only while it loads, and every `Script` subclass in the module's globals is
  registered in `scripts_data` (scripts.py `load_scripts`, script_loading.py `load_module`);
- `ScriptRunner.initialize_scripts` instantiates each registered class per tab and sorts them into
  always-on and selectable scripts by `show()`;
- `setup_ui` builds the UI inside the caller's `gr.Blocks`: `inputs[0]` is the "Script" dropdown and each
  script's `ui()` components get the slice `args_from:args_to` of `inputs` (so of `p.script_args`);
- every hook dispatcher runs the always-on scripts that override the hook (`ordered_scripts`) with
  `p.script_args[args_from:args_to]`, inside `try/except` that reports through `errors.report`.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from modules import errors

AlwaysVisible = object()

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stand-in webui root
current_basedir = script_path


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess_image_after_composite(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def describe(self):
        return ""

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"

    def before_hr(self, p, *args):
        pass


def basedir() -> str:
    """The folder of the extension whose script is being loaded (the webui root otherwise)."""
    return current_basedir


ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []


modules_added: list[str] = []
"""Names `load_script(..., forge=True)` put in sys.modules (the test fixture removes them)."""


def load_script(path: str, basedir: str | None = None, *, forge: bool = False) -> Any:
    """Load one script file as A1111 1.10 does and register its Script classes; None if it failed (reported).

    A1111 1.10 does not put the module in `sys.modules` (1.9's "scripts.<name>" entries were undone), so
    e.g. a dataclass with string annotations fails to load there; Forge's loader adds it under its file
    name first (`forge=True`)."""
    global current_basedir
    path = os.path.abspath(path)
    basedir = basedir or os.path.dirname(os.path.dirname(path))
    saved = sys.path
    try:
        if basedir != script_path:
            sys.path = [basedir] + sys.path
        current_basedir = basedir
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        if forge and spec.name not in sys.modules:
            sys.modules[spec.name] = module
            modules_added.append(spec.name)
        spec.loader.exec_module(module)
        for value in module.__dict__.values():
            if inspect.isclass(value) and issubclass(value, Script):
                scripts_data.append(ScriptClassData(value, path, basedir, module))
        return module
    except Exception:
        errors.report(f"Error loading script: {os.path.basename(path)}", exc_info=True)
        return None
    finally:
        sys.path = saved
        current_basedir = script_path


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


@dataclass
class ScriptArg:
    label: str = ""
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list | None = None


@dataclass
class ScriptInfo:
    name: str
    is_alwayson: bool
    is_img2img: bool
    args: list[ScriptArg] = field(default_factory=list)


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for script_data in scripts_data:
            try:
                script = script_data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {script_data.module}: ", exc_info=True)
                continue
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def create_script_ui(self, script):
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        try:
            self._create_script_ui_inner(script)
        except Exception:
            errors.report(f"Error creating UI for {script.name}: ", exc_info=True)

    def _create_script_ui_inner(self, script):
        controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        script.controls = controls
        if controls is None:
            return
        script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()
        api_args = []
        for control in controls:
            control.custom_script_source = os.path.basename(script.filename)
            arg = ScriptArg(label=control.label or "")
            for name in ("value", "minimum", "maximum", "step"):
                v = getattr(control, name, None)
                if v is not None:
                    setattr(arg, name, v)
            choices = getattr(control, "choices", None)
            if choices is not None:
                arg.choices = [x[0] if isinstance(x, tuple) else x for x in choices]
            api_args.append(arg)
        script.api_info = ScriptInfo(script.name, script.alwayson, script.is_img2img, api_args)
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names
        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui_for_section(self, section, scriptlist=None):
        for script in self.alwayson_scripts if scriptlist is None else scriptlist:
            if script.alwayson and script.section != section:
                continue
            if script.create_group:
                with gr.Group(visible=script.alwayson) as group:
                    self.create_script_ui(script)
                script.group = group
            else:
                self.create_script_ui(script)

    def prepare_ui(self):
        self.inputs = [None]

    def setup_ui(self):
        """Build the scripts' UI; call inside `gr.Blocks()` after `prepare_ui()`. Returns `inputs`."""
        titles = [wrap_call(s.title, s.filename, "title") or s.filename for s in self.scripts]
        self.title_map = {title.lower(): script for title, script in zip(titles, self.scripts, strict=True)}
        self.titles = [
            wrap_call(s.title, s.filename, "title") or f"{s.filename} [error]" for s in self.selectable_scripts
        ]
        self.setup_ui_for_section(None)
        dropdown = gr.Dropdown(
            label="Script", elem_id="script_list", choices=["None"] + self.titles, value="None", type="index"
        )
        self.inputs[0] = dropdown
        self.setup_ui_for_section(None, self.selectable_scripts)
        self.infotext_fields.append((dropdown, lambda x: gr.update(value=x.get("Script", "None"))))
        return self.inputs

    def run(self, p, *args):
        """Run the selected (dropdown) script; None when "None" is selected."""
        script_index = args[0]
        if script_index == 0 or script_index is None:
            return None
        script = self.selectable_scripts[script_index - 1]
        return script.run(p, *args[script.args_from : script.args_to])

    def script(self, title):
        return self.title_map.get(title.lower())

    def ordered_scripts(self, method_name):
        """The always-on scripts that override `method_name`, in load order (1.9+ skips the others)."""
        base = getattr(Script, method_name, None)
        return [s for s in self.alwayson_scripts if getattr(type(s), method_name, None) is not base]

    def _dispatch(self, method_name, p, *lead, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *lead, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):  # sic, the real name
        for script in self.ordered_scripts("setup"):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._dispatch("before_process", p)

    def process(self, p):
        self._dispatch("process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._dispatch("process_before_every_sampling", p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._dispatch("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._dispatch("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._dispatch("process_batch", p, **kwargs)

    def postprocess(self, p, processed):
        self._dispatch("postprocess", p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        self._dispatch("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._dispatch("postprocess_batch_list", p, pp, **kwargs)

    def post_sample(self, p, ps):
        self._dispatch("post_sample", p, ps)

    def on_mask_blend(self, p, mba):
        self._dispatch("on_mask_blend", p, mba)

    def postprocess_image(self, p, pp):
        self._dispatch("postprocess_image", p, pp)

    def postprocess_image_after_composite(self, p, pp):
        self._dispatch("postprocess_image_after_composite", p, pp)

    def before_hr(self, p):
        self._dispatch("before_hr", p)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None


def create_runners() -> tuple[ScriptRunner, ScriptRunner]:
    """What the webui does at startup for both tabs: initialize the scripts and build their UI."""
    global scripts_txt2img, scripts_img2img
    runners = []
    for is_img2img in (False, True):
        runner = ScriptRunner()
        runner.initialize_scripts(is_img2img=is_img2img)
        with gr.Blocks():
            runner.prepare_ui()
            runner.setup_ui()
        runners.append(runner)
    scripts_txt2img, scripts_img2img = runners
    return scripts_txt2img, scripts_img2img


def reset() -> None:
    global scripts_txt2img, scripts_img2img, current_basedir
    scripts_data.clear()
    scripts_txt2img = scripts_img2img = None
    current_basedir = script_path
