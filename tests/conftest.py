"""Shared test setup: the repo root on sys.path (for `lib_todo`), and the `webui` fixture.

The `webui` fixture puts tests/webui_stub (a stand-in for the A1111 1.10 `modules` package, see
tests/webui_stub/modules/__init__.py) on sys.path for one test, loads the stand-in's X/Y/Z plot script, and
yields a `WebUI` helper. Afterwards the path entry and every stand-in module are removed again, so
`modules` and friends never leak into other tests, and each test starts from fresh webui state.

    def test_example(webui):
        webui.load_extension_script()                  # scripts/todo.py, as the webui loads it
        webui.set_model(webui.make_a1111_model())      # or webui.make_forge_model()
        run = webui.txt2img({"ToDo": [True, 2]}, enable_hr=True, hr_scale=1.5)
        webui.assert_no_errors()                       # hooks swallow exceptions, as in the webui
        params = webui.params(run.processed)           # infotext parsed back
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "webui_stub"
STUB_TOP_LEVEL = ("modules", "stub_models", "stub_flux")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _purge_stub_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in STUB_TOP_LEVEL:
            del sys.modules[name]


def _ui_value(component: Any, value: Any = None) -> Any:
    """The value the browser sends for a component showing `value` (default: its initial value); a
    type="index" dropdown sends the index of the choice."""
    value = component.value if value is None else value
    if getattr(component, "type", None) == "index":
        labels = [c[0] if isinstance(c, tuple) else c for c in component.choices]
        return labels.index(value) if value in labels else None
    return value


class Run(NamedTuple):
    p: Any  # the job object after the run
    processed: Any  # modules.processing.Processed


def _is_under(module: str, names: tuple[str, ...]) -> bool:
    """Whether `module` is one of `names` (dotted names allowed) or inside one of them."""
    return any(module == name or module.startswith(name + ".") for name in names)


class _ForbidImports(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if _is_under(fullname, self.names):
            raise ModuleNotFoundError(f"No module named '{fullname}' (forbidden by the test)", name=fullname)
        return None


class WebUI:
    """Helpers around the stand-in webui; the stand-in modules are attributes (`webui.shared`, ...)."""

    TXT2IMG_DEFAULTS = {
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "steps": 3,
        "seed": 1,
        "cfg_scale": 7.0,
        "sampler_name": "Euler",
        "do_not_save_samples": True,
        "do_not_save_grid": True,
    }
    IMG2IMG_DEFAULTS = {**TXT2IMG_DEFAULTS, "steps": 4, "denoising_strength": 0.5}

    def __init__(self) -> None:
        import stub_models
        from modules import (
            errors,
            infotext_utils,
            processing,
            script_callbacks,
            scripts,
            sd_models,
            sd_samplers,
            shared,
            ui_components,
        )

        self.errors_module = errors
        self.infotext_utils = infotext_utils
        self.processing = processing
        self.script_callbacks = script_callbacks
        self.scripts = scripts
        self.sd_samplers = sd_samplers
        self.sd_models = sd_models
        self.shared = shared
        self.ui_components = ui_components
        self.stub_models = stub_models
        self.process_images = processing.process_images
        self.run_job = processing.run_job
        self.InjectedFailure = sd_samplers.InjectedFailure
        self.xyz_grid = scripts.load_script(str(STUB / "builtin_scripts" / "xyz_grid.py"))
        self.extension_modules: list[Any] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="webui_stub_")

    def close(self) -> None:
        for name in self.scripts.modules_added:
            sys.modules.pop(name, None)
        self._tmp.cleanup()

    # loading scripts, startup

    def load_extension_script(
        self, names: tuple[str, ...] = ("todo.py", "todo_xyz.py"), start: bool = True, forge_loader: bool = False
    ) -> Any:
        """Load the repo's scripts/<name> files that exist, as the webui loads an extension's scripts (module
        named by file name, repo root on sys.path only while loading; `forge_loader`: also in sys.modules, as
        Forge does); then, with `start`, what the webui does after loading all scripts (`start()`). Returns
        the first module."""
        loaded = []
        for name in names:
            path = REPO / "scripts" / name
            if path.exists():
                loaded.append(self._load(path, forge_loader))
        if not loaded:
            raise FileNotFoundError(f"none of scripts/{names} exists")
        if start:
            self.start()
        return loaded[0]

    def load_script_text(
        self, source: str, filename: str = "probe.py", extension: str = "probe-ext", forge_loader: bool = False
    ) -> Any:
        """Write `source` to <tmp>/<extension>/scripts/<filename> and load it like an extension script."""
        path = Path(self._tmp.name) / extension / "scripts" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        return self._load(path, forge_loader)

    def _load(self, path: Path, forge_loader: bool = False) -> Any:
        before = len(self.errors())
        module = self.scripts.load_script(str(path), forge=forge_loader)
        if module is None:
            details = "\n".join(r.traceback for r in self.errors()[before:])
            raise AssertionError(f"the webui could not load {path}:\n{details}")
        self.extension_modules.append(module)
        return module

    def start(self) -> None:
        """Startup after scripts are loaded: `before_ui` and `ui_settings` callbacks, then both tabs' script
        runners with their UI built (webui.py, ui.py); `args_from/args_to` are set here."""
        self.script_callbacks.before_ui_callback()
        self.script_callbacks.ui_settings_callback()
        self.scripts.create_runners()

    def runner(self, is_img2img: bool = False) -> Any:
        if self.scripts.scripts_txt2img is None:
            self.start()
        return self.scripts.scripts_img2img if is_img2img else self.scripts.scripts_txt2img

    def script(self, title: str, is_img2img: bool = False) -> Any:
        return self.runner(is_img2img).script(title)

    def unload(self) -> None:
        """Reload UI: the webui calls the `script_unloaded` callbacks before loading scripts again."""
        self.script_callbacks.script_unloaded_callback()

    # models

    def make_a1111_model(self, arch: str = "sd15", width: int = 32, seed: int = 0) -> Any:
        return self.stub_models.make_a1111_model(arch, width, seed)

    def make_forge_model(
        self, arch: str = "sd15", width: int = 32, seed: int = 0, flavour: str = "forge", legacy: bool = False
    ) -> Any:
        return self.stub_models.make_forge_model(arch, width, seed, flavour, legacy)

    def set_model(self, sd_model: Any, loaded_callback: bool = True) -> Any:
        """Make `sd_model` the loaded model; `on_model_loaded` callbacks run as after a real load."""
        self.shared.sd_model = sd_model
        if loaded_callback:
            self.script_callbacks.model_loaded_callback(sd_model)
        return sd_model

    # jobs

    def script_args(
        self,
        alwayson: dict[str, list] | None = None,
        *,
        selectable: tuple[str, list] | None = None,
        is_img2img: bool = False,
        api: bool = False,
    ) -> list:
        """`p.script_args` as the UI (`api=False`: each input's current value) or the API (`api=True`:
        `init_default_script_args` re-runs each `ui()` in a `gr.Blocks` for defaults) would send them, with
        `alwayson={title: args}` written at each script's `args_from` (titles case-insensitive, extra args
        dropped, missing args keep defaults) and `selectable=(title, args)` chosen in the dropdown."""
        import gradio as gr

        runner = self.runner(is_img2img)
        if api:
            args = [None] * max([1] + [s.args_to for s in runner.scripts if s.args_to is not None])
            with gr.Blocks():
                for script in runner.scripts:
                    controls = script.ui(script.is_img2img)
                    if controls:
                        args[script.args_from : script.args_to] = [c.value for c in controls]
        else:
            args = [None] + [_ui_value(c) for c in runner.inputs[1:]]
        args[0] = 0
        for title, values in (alwayson or {}).items():
            script = runner.script(title)
            if script is None or not script.alwayson:
                raise KeyError(f"no always-on script titled {title!r}")
            for i in range(min(script.args_to - script.args_from, len(values))):
                args[script.args_from + i] = values[i]
        if selectable is not None:
            title, values = selectable
            script = runner.script(title)
            args[script.args_from : script.args_to] = values
            args[0] = runner.selectable_scripts.index(script) + 1
        return args

    def make_txt2img(self, alwayson: dict[str, list] | None = None, **kwargs: Any) -> Any:
        """A txt2img job `p`; kwargs: selectable=(title, args), api, script_args, and any job field."""
        return self._make(False, alwayson, **kwargs)

    def make_img2img(self, alwayson: dict[str, list] | None = None, **kwargs: Any) -> Any:
        """An img2img job `p`, as make_txt2img."""
        return self._make(True, alwayson, **kwargs)

    def _make(
        self,
        is_img2img: bool,
        alwayson: dict[str, list] | None,
        *,
        selectable=None,
        api: bool = False,
        script_args: list | None = None,
        **fields: Any,
    ) -> Any:
        if script_args is None:
            script_args = self.script_args(alwayson, selectable=selectable, is_img2img=is_img2img, api=api)
        if is_img2img:
            cls, defaults = self.processing.StableDiffusionProcessingImg2Img, self.IMG2IMG_DEFAULTS
        else:
            cls, defaults = self.processing.StableDiffusionProcessingTxt2Img, self.TXT2IMG_DEFAULTS
        p = cls(sd_model=self.shared.sd_model, **{**defaults, **fields})
        p.is_api = api
        p.scripts = self.runner(is_img2img)
        p.script_args = tuple(script_args) if api else script_args  # as the webui does (no setup() hook modelled)
        return p

    def txt2img(self, alwayson: dict[str, list] | None = None, **kwargs: Any) -> Run:
        """Build a txt2img job (see make_txt2img) and run it as the webui does (run_job). Returns Run(p, processed)."""
        p = self.make_txt2img(alwayson, **kwargs)
        return Run(p, self.run_job(p))

    def img2img(self, alwayson: dict[str, list] | None = None, **kwargs: Any) -> Run:
        p = self.make_img2img(alwayson, **kwargs)
        return Run(p, self.run_job(p))

    # infotext

    def parse_generation_parameters(self, text: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
        return self.infotext_utils.parse_generation_parameters(text, skip_fields)

    def params(self, processed: Any, index: int | None = None) -> dict[str, Any]:
        """The parsed infotext of one output image (default: the first image, after any grid)."""
        i = processed.index_of_first_image if index is None else index
        return self.parse_generation_parameters(processed.infotexts[i])

    def paste(self, infotext: str, is_img2img: bool = False) -> dict[Any, Any]:
        """The UI paste button over the runner's infotext fields: {component: new value}."""
        return self.infotext_utils.paste(infotext, self.runner(is_img2img).infotext_fields)

    def paste_script_args(self, infotext: str, is_img2img: bool = False) -> list:
        """`script_args` after pasting `infotext` into the UI (fields paste leaves alone keep their value)."""
        runner = self.runner(is_img2img)
        pasted = self.paste(infotext, is_img2img)
        args = self.script_args(is_img2img=is_img2img)
        for i, component in enumerate(runner.inputs):
            if component in pasted:
                args[i] = _ui_value(component, pasted[component])
        return args

    def api_script_args(self, infotext: str, is_img2img: bool = False) -> dict[int, Any]:
        """{script_args index: value} the API reads from a request's `infotext` field."""
        return self.infotext_utils.api_script_args(infotext, self.runner(is_img2img))

    # errors, steps, failures

    def errors(self) -> list[Any]:
        """What the webui swallowed and reported (hook and callback exceptions), oldest first."""
        return list(self.errors_module.recorded)

    def assert_no_errors(self) -> None:
        recorded = self.errors()
        assert not recorded, "the webui reported errors:\n" + "\n".join(f"{r.message}\n{r.traceback}" for r in recorded)

    def record_cfg_steps(self) -> list[tuple[bool, int, int]]:
        """Register an `on_cfg_denoiser` callback; the list fills with (is_hr_pass, sampling_step, total)."""
        seen: list[tuple[bool, int, int]] = []

        def record(params: Any) -> None:
            p = params.denoiser.p
            seen.append((bool(getattr(p, "is_hr_pass", False)), params.sampling_step, params.total_sampling_steps))

        self.script_callbacks.on_cfg_denoiser(record, name="test_record_cfg_steps")
        return seen

    def inject_failure(self, step: int = 0, hires: bool = False) -> None:
        """Make sampling raise `webui.InjectedFailure` at denoiser step `step` (of the hires pass if `hires`)."""
        self.sd_samplers.inject_failure(step, hires)

    @staticmethod
    @contextlib.contextmanager
    def forbid_imports(*names: str) -> Iterator[None]:
        """Make `import <name>` (and submodules) fail inside the block, as on a webui without those packages
        (Forge has no `ldm`/`sgm`). Modules already imported are hidden for the duration."""
        hidden = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_under(k, names)}
        finder = _ForbidImports(names)
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            sys.modules.update(hidden)


@pytest.fixture
def webui() -> Iterator[WebUI]:
    import torch

    stub = str(STUB)
    _purge_stub_modules()
    sys.path.insert(0, stub)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stand-in's UNet is tiny; more threads only contend on a busy machine
    ui = None
    try:
        ui = WebUI()
        yield ui
    finally:
        torch.set_num_threads(threads)
        if ui is not None:
            ui.close()
        while stub in sys.path:
            sys.path.remove(stub)
        _purge_stub_modules()
