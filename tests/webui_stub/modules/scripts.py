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

Only the hooks that the extension and its tests implement are modelled (A1111 has more: `setup`,
`before_process`, `before_hr`, the `postprocess_batch*`/`postprocess_image*` family, ...). Selectable
scripts get their UI and their slice of `p.script_args`, but running one is not modelled.
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


class PostSampleArgs:
    def __init__(self, samples: Any) -> None:
        self.samples = samples


class Script:
    """Base class of webui scripts; the hooks do nothing unless a subclass overrides them."""

    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    group = None
    infotext_fields = None
    controls = None

    def title(self):
        raise NotImplementedError("a script must have a title")

    def show(self, is_img2img):
        """True: selectable in the dropdown; AlwaysVisible: always on; False: hidden in this tab."""
        return True

    def ui(self, is_img2img):
        """The script's gradio inputs; their values become the script's slice of `p.script_args`."""
        return None

    def process(self, p, *args):
        """Once per job, before the job's `init`."""

    def process_batch(self, p, *args, **kwargs):
        """Per batch, just before conditioning and sampling (kwargs: batch_number, prompts, seeds, subseeds)."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Before each sampler pass, hires included (kwargs: x, noise, c, uc)."""

    def post_sample(self, p, ps, *args):
        """After sampling, before decoding; `ps.samples` may be replaced."""

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


def load_script(path: str, *, forge: bool = False) -> Any:
    """Run one script file and record its Script classes; returns the module, or None (reported)."""
    path = os.path.abspath(path)
    ext_dir = os.path.dirname(os.path.dirname(path))
    name = os.path.basename(path)
    old_path = sys.path
    try:
        if ext_dir != WEBUI_ROOT:
            sys.path = [ext_dir, *old_path]
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
        self.inputs.extend(controls)
        script.args_to = len(self.inputs)

    def setup_ui_for_section(self, section, scriptlist=None):
        """Build the UI of `scriptlist` (default: the always-on scripts; no script here has a `section`),
        each in a gr.Group."""
        for script in scriptlist if scriptlist is not None else self.alwayson_scripts:
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

    # the dispatchers processing.py calls; each forwards to `_call_hook`
    def process(self, p):
        self._call_hook("process", p)

    def process_batch(self, p, **kwargs):
        self._call_hook("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call_hook("process_before_every_sampling", p, **kwargs)

    def post_sample(self, p, ps):
        self._call_hook("post_sample", p, ps)

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
