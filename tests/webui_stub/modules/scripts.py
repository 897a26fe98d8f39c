"""Stand-in for modules/scripts.py: the `Script` base class, script loading and the per-tab `ScriptRunner`.

As in A1111 1.10:
- a script file becomes a module named after the file ("todo.py"), not entered in `sys.modules`, with its
  extension folder first on `sys.path` only while the file runs; every `Script` subclass it defines is
  recorded in `scripts_data` (Forge's loader, `forge=True`, also enters the module in `sys.modules`);
- a runner instantiates the recorded classes for its tab, splits them by `show()` into always-on and
  selectable scripts, and gives each script the slice `args_from:args_to` of its UI inputs, which is the
  slice of `p.script_args` the script's hooks receive (`inputs[0]` is the "Script" dropdown);
- a hook runs on every always-on script that overrides it, in load order; an exception is reported with
  `errors.report` and the next script still runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from typing import Any, NamedTuple

import gradio as gr

from modules import errors

AlwaysVisible = object()

WEBUI_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_loading_from = WEBUI_ROOT


class PostSampleArgs:
    def __init__(self, samples: Any) -> None:
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image: Any) -> None:
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images: list) -> None:
        self.images = images


class Script:
    """Base class of webui scripts; the hooks do nothing unless a subclass overrides them."""

    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    setup_for_ui_only = False
    section = None
    controls = None

    def title(self):
        raise NotImplementedError("a script must have a title")

    def show(self, is_img2img):
        """True: selectable in the dropdown; AlwaysVisible: always on; False: hidden in this tab."""
        return True

    def ui(self, is_img2img):
        """The script's gradio inputs; their values become the script's slice of `p.script_args`."""
        return None

    def run(self, p, *args):
        """A selectable script's job; returns a Processed, or None to let the webui run `process_images`."""
        return None

    def setup(self, p, *args):
        """When the job gets both `scripts` and `script_args`, before anything else happens."""

    def before_process(self, p, *args):
        """First thing in `process_images`, before settings are overridden."""

    def process(self, p, *args):
        """Once per job, before the job's `init`."""

    def before_process_batch(self, p, *args, **kwargs):
        """Per batch, before its prompts are used (kwargs: batch_number, prompts, seeds, subseeds)."""

    def process_batch(self, p, *args, **kwargs):
        """Per batch, just before conditioning and sampling (same kwargs)."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Before each sampler pass, hires included (kwargs: x, noise, c, uc)."""

    def before_hr(self, p, *args):
        """Before the hires pass of a txt2img job; `p.is_hr_pass` is already set."""

    def post_sample(self, p, ps, *args):
        """After sampling, before decoding; `ps.samples` may be replaced."""

    def postprocess_batch(self, p, *args, **kwargs):
        """With the decoded images of a batch (kwargs: images, batch_number)."""

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        """With the batch's images as a list in `pp.images` (kwargs: batch_number)."""

    def postprocess_image(self, p, pp, *args):
        """Per image, `pp.image`."""

    def postprocess_image_after_composite(self, p, pp, *args):
        """Per image, after inpainting composites (none in the stand-in)."""

    def postprocess(self, p, processed, *args):
        """Once, with the finished Processed; skipped when sampling raised."""

    def elem_id(self, item_id):
        """An HTML id unique to this script (and tab, if the script shows in both)."""
        tab = ""
        if self.show(True) == self.show(False):
            tab = ("img2img" if self.is_img2img else "txt2img") + "_"
        slug = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{slug}_{item_id}"


class ScriptClassData(NamedTuple):
    script_class: type
    path: str
    basedir: str
    module: Any


scripts_data: list[ScriptClassData] = []
modules_added: list[str] = []  # what the Forge-style loader put into sys.modules (the fixture removes it)


def basedir() -> str:
    """The extension folder of the script that is loading right now, else the webui root."""
    return _loading_from


def load_script(path: str, basedir: str | None = None, *, forge: bool = False) -> Any:
    """Run one script file and record its Script classes; returns the module, or None (reported)."""
    global _loading_from
    path = os.path.abspath(path)
    ext_dir = basedir or os.path.dirname(os.path.dirname(path))
    name = os.path.basename(path)
    old_path = sys.path
    try:
        if ext_dir != WEBUI_ROOT:
            sys.path = [ext_dir, *old_path]
        _loading_from = ext_dir
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        if forge and name not in sys.modules:
            sys.modules[name] = module
            modules_added.append(name)
        spec.loader.exec_module(module)
    except Exception:
        errors.report(f"Error loading script: {name}", exc_info=True)
        return None
    finally:
        sys.path = old_path
        _loading_from = WEBUI_ROOT
    found = [v for v in vars(module).values() if inspect.isclass(v) and issubclass(v, Script)]
    scripts_data.extend(ScriptClassData(cls, path, ext_dir, module) for cls in found)
    return module


def _guarded(what: str, fn: Any, *args: Any, fallback: Any = None) -> Any:
    try:
        return fn(*args)
    except Exception:
        errors.report(f"Error calling: {what}", exc_info=True)
        return fallback


class ScriptRunner:
    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.title_map: dict[str, Script] = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]

    def initialize_scripts(self, is_img2img):
        """One instance of every recorded class for this tab, sorted by what its `show()` says."""
        self.scripts, self.alwayson_scripts, self.selectable_scripts = [], [], []
        for entry in scripts_data:
            script = _guarded(f"{entry.path}/__init__", entry.script_class)
            if script is None:
                continue
            script.filename = entry.path
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            shown = script.show(is_img2img)
            if shown is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
            elif not shown:
                continue
            else:
                self.selectable_scripts.append(script)
            self.scripts.append(script)

    def prepare_ui(self):
        self.inputs = [None]

    def _build_one(self, script):
        script.args_from = script.args_to = len(self.inputs)
        controls = _guarded(f"{script.filename}/ui", script.ui, script.is_img2img)
        script.controls = controls
        if not controls:
            return
        self.infotext_fields.extend(script.infotext_fields or [])
        self.paste_field_names.extend(script.paste_field_names or [])
        self.inputs.extend(controls)
        script.args_to = len(self.inputs)

    def setup_ui_for_section(self, section, scriptlist=None):
        """Build the UI of `scriptlist` (default: the always-on scripts of `section`), each in a gr.Group."""
        chosen = scriptlist if scriptlist is not None else self.alwayson_scripts
        for script in chosen:
            if script.alwayson and script.section != section:
                continue
            if not script.create_group:
                self._build_one(script)
                continue
            with gr.Group(visible=script.alwayson) as box:
                self._build_one(script)
            script.group = box

    def setup_ui(self):
        """Inside a gr.Blocks, after `prepare_ui()`: always-on UIs, the dropdown, then selectable UIs."""
        self.title_map = {_guarded("title", s.title, fallback=s.filename).lower(): s for s in self.scripts}
        titles = [s.title() for s in self.selectable_scripts]
        self.setup_ui_for_section(None)
        chooser = gr.Dropdown(label="Script", choices=["None", *titles], value="None", type="index")
        self.inputs[0] = chooser
        self.setup_ui_for_section(None, self.selectable_scripts)
        self.infotext_fields.append((chooser, lambda params: gr.update(value=params.get("Script", "None"))))
        return self.inputs

    def script(self, title):
        return self.title_map.get(title.lower())

    def run(self, p, *args):
        """Run the script chosen in the dropdown (`args[0]`, 0 = none); None lets the caller process."""
        chosen = args[0] or 0
        if chosen == 0:
            return None
        script = self.selectable_scripts[chosen - 1]
        return script.run(p, *args[script.args_from : script.args_to])

    def _overriding(self, hook):
        """The always-on scripts whose class overrides `hook` (1.10 calls only those)."""
        default = getattr(Script, hook)
        return [s for s in self.alwayson_scripts if getattr(type(s), hook) is not default]

    def _call_hook(self, hook, p, *extra, **kwargs):
        for script in self._overriding(hook):
            own_args = p.script_args[script.args_from : script.args_to]
            try:
                getattr(script, hook)(p, *extra, *own_args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):  # sic: A1111's spelling
        for script in self._overriding("setup"):
            if is_ui or not script.setup_for_ui_only:
                try:
                    script.setup(p, *p.script_args[script.args_from : script.args_to])
                except Exception:
                    errors.report(f"Error running setup: {script.filename}", exc_info=True)

    # the dispatchers processing.py calls; each forwards to `_call_hook`
    def before_process(self, p):
        self._call_hook("before_process", p)

    def process(self, p):
        self._call_hook("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call_hook("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call_hook("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call_hook("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._call_hook("before_hr", p)

    def post_sample(self, p, ps):
        self._call_hook("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        self._call_hook("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._call_hook("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp):
        self._call_hook("postprocess_image", p, pp)

    def postprocess_image_after_composite(self, p, pp):
        self._call_hook("postprocess_image_after_composite", p, pp)

    def postprocess(self, p, processed):
        self._call_hook("postprocess", p, processed)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None


def create_runners() -> tuple[ScriptRunner, ScriptRunner]:
    """Webui startup for both tabs: a runner each, its scripts' UI built in a throwaway gr.Blocks."""
    global scripts_txt2img, scripts_img2img
    built = []
    for img2img_tab in (False, True):
        runner = ScriptRunner()
        runner.initialize_scripts(is_img2img=img2img_tab)
        with gr.Blocks():
            runner.prepare_ui()
            runner.setup_ui()
        built.append(runner)
    scripts_txt2img, scripts_img2img = built
    return scripts_txt2img, scripts_img2img
