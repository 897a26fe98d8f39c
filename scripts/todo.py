"""ToDo: Token Downsampling, as an always-visible script for A1111 (>= 1.10), Forge, reForge and Forge Neo.

The core is `lib_todo` (pure torch); a job object (`lib_todo.webui.job.TodoJob`) installs it per sampling pass
and removes it. This file is the webui glue: the accordion, the callbacks that drive the job, infotext and XYZ.
"""

from typing import Any

import gradio as gr
from modules import script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

import lib_todo
from lib_todo.backends import dit
from lib_todo.settings import HIRES_MODES, METHODS, TodoSettings
from lib_todo.webui.infotext import ALL_KEYS, KEYS, from_infotext, to_infotext
from lib_todo.webui.job import TodoJob
from lib_todo.webui.models import a1111_unet, unsupported_reason
from lib_todo.webui.script_args import ARG_NAMES, parse_script_args

TITLE = "ToDo"
OVERRIDES_ATTR = "todo_overrides"  # per-job values set by XYZ axes: {"factor": 2.0, ...}
JOB_ATTR = "_todo_job"


def log(message: str) -> None:
    print(f"[ToDo] {message}")


# A1111 and Forge run one job at a time: the CFG-denoiser callback finds it here.
CURRENT: dict[str, Any] = {"job": None}


class TodoScript(scripts.Script):
    sorting_priority = 15  # Forge: UI order among built-ins

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        d = TodoSettings()
        hires = {"visible": not is_img2img}
        with InputAccordion(False, label="ToDo: token downsampling", elem_id=self.elem_id("enabled")) as enabled:
            with gr.Row(elem_classes="todo-row"):
                factor = self.slider("Factor (0 = auto, 1 = off)", "factor", 8, 1, d.factor)
                factor_level2 = self.slider(
                    "Level 2 factor (0 = auto, 1 = off)", "factor_level2", 8, 1, d.factor_level2
                )
            with gr.Row(elem_classes="todo-row"):
                method = self.dropdown("Method", "method", METHODS, d.method)
                start = self.slider("Start at", "start", 1, 0.05, d.start)
                stop = self.slider("Stop at", "stop", 1, 0.05, d.stop)
            with gr.Row(elem_classes="todo-row", **hires):
                hires_mode = self.dropdown("Hires pass", "hires_mode", HIRES_MODES, d.hires_mode, **hires)
                hires_factor = self.slider(
                    "Hires factor (0 = auto, 1 = off)", "hires_factor", 8, 1, d.hires_factor, **hires
                )
        controls = [enabled, factor, factor_level2, method, start, stop, hires_mode, hires_factor]
        self.infotext_fields = [(enabled, paste_enabled)] + [
            (control, paste_setting(name)) for name, control in zip(ARG_NAMES[1:], controls[1:], strict=True)
        ]
        self.paste_field_names = list(KEYS.values())
        return controls

    def slider(self, label: str, key: str, maximum: float, step: float, value: float, **kw: Any) -> Any:
        return gr.Slider(
            label=label, minimum=0, maximum=maximum, step=step, value=value, elem_id=self.elem_id(key), **kw
        )

    def dropdown(self, label: str, key: str, choices: tuple[str, ...], value: str, **kw: Any) -> Any:
        return gr.Dropdown(label=label, choices=list(choices), value=value, elem_id=self.elem_id(key), **kw)

    def process(self, p: Any, *args: Any) -> None:
        finish_job(p)  # a job that raised skipped postprocess: clean up what it left
        remove_everywhere()
        request = parse_script_args(args, getattr(p, OVERRIDES_ATTR, None))
        clear_infotext(p)
        if request.problems:
            log("; ".join(p.removeprefix("ToDo ") for p in request.problems) + ". ToDo is off for this job.")
            return
        if not request.enabled:
            return
        reason = unsupported_reason(p.sd_model, shared.opts)
        if reason:
            log(f"{reason}; ToDo is off for this job.")
            return
        job = TodoJob(request.settings, log)
        job.refiner = getattr(p, "refiner_checkpoint_info", None)
        setattr(p, JOB_ATTR, job)
        CURRENT["job"] = job

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is not None:
            job.clear_passes()

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is None:
            return
        hires = bool(getattr(p, "is_hr_pass", False))
        if hires and getattr(shared.opts, "hypertile_enable_unet_secondpass", False):
            job.end_pass()
            job.tell("HyperTile U-Net is on for the hires pass; ToDo sits that pass out")
            return
        job.start_pass(p.sd_model, hires)

    def post_sample(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is not None:
            job.end_pass()
            write_infotext(p, job)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        finish_job(p)


def finish_job(p: Any) -> None:
    """Remove everything the job installed (also a job that raised before its postprocess)."""
    job = getattr(p, JOB_ATTR, None)
    for candidate in {id(j): j for j in (job, CURRENT["job"]) if j is not None}.values():
        candidate.finish()
    CURRENT["job"] = None
    if job is not None:
        delattr(p, JOB_ATTR)


def remove_everywhere(sd_model: Any = None) -> None:
    """Defensive: remove any lib_todo hook from the loaded model's UNet (A1111), and put back a DiT attention
    kernel that a model call left replaced (Forge, Neo: replaced only while one call runs)."""
    dit.restore_all()
    unet = a1111_unet(sd_model if sd_model is not None else getattr(shared, "sd_model", None))
    if unet is not None:
        lib_todo.remove(unet)


def write_infotext(p: Any, job: TodoJob) -> None:
    """Settings into infotext when, and only when, ToDo acted in some pass of this batch."""
    applied = job.applied()
    clear_infotext(p)
    if applied:
        p.extra_generation_params.update(to_infotext(job.settings, applied))


def clear_infotext(p: Any) -> None:
    for key in ALL_KEYS:
        p.extra_generation_params.pop(key, None)


def paste_enabled(params: dict[str, str]) -> bool:
    return from_infotext(params)[0] is not None


def paste_setting(name: str) -> Any:
    """A paste reader for one control: the value from infotext, or None (leave the control alone)."""

    def read(params: dict[str, str]) -> Any:
        settings, _ = from_infotext(params)
        return None if settings is None else getattr(settings, name)

    return read


def on_infotext_pasted(infotext: str, params: dict[str, str]) -> None:
    problems = [p.removeprefix("ToDo ") for p in from_infotext(params)[1]]
    if problems:
        log("the pasted ToDo settings make no sense (" + "; ".join(problems) + "); ToDo is switched off")


def on_cfg_denoiser(params: Any) -> None:
    """The step window follows sampler steps, restarting with every pass (hires included)."""
    job = CURRENT["job"]
    if job is None:
        return
    # The denoiser's own counter, as A1111's refiner switch uses: params.sampling_step lags one call behind.
    denoiser = getattr(params, "denoiser", None)
    step, total = getattr(denoiser, "step", None), getattr(denoiser, "total_steps", None)
    if not isinstance(step, int) or not isinstance(total, int) or total <= 0:
        step, total = params.sampling_step, params.total_sampling_steps
    job.set_progress(int(step), int(total))


def on_model_loaded(sd_model: Any) -> None:
    """A load between jobs: nothing of ToDo may ride on the new model. A load while a pass samples is the
    refiner (A1111 at its switch step; Forge Neo unless `refiner_fast_sd` loads the weights into the same
    network): ToDo goes on with the new model for the steps that remain."""
    remove_everywhere(sd_model)
    job = CURRENT["job"]
    # Only the job's own refiner: a job that raised leaves its pass open, and a later load is no refiner.
    refiner = getattr(job, "refiner", None)
    if (
        refiner is not None
        and job.sampling()
        and same_checkpoint(getattr(sd_model, "sd_checkpoint_info", None), refiner)
    ):
        job.switch_model(sd_model)


def same_checkpoint(a: Any, b: Any) -> bool:
    """Checkpoint infos of one file (the webui may look one up again: compare the file, not the object)."""
    if a is None or b is None:
        return False
    return a == b or (
        getattr(a, "filename", None) is not None and getattr(a, "filename", None) == getattr(b, "filename", None)
    )


def on_script_unloaded() -> None:
    remove_everywhere()
    for callback in (on_cfg_denoiser, on_model_loaded, on_infotext_pasted, on_script_unloaded, add_axis_options):
        script_callbacks.remove_callbacks_for_function(callback)


# XYZ plot: every setting as an axis, applied to the job object only.


def override_applier(name: str) -> Any:
    def apply(p: Any, x: Any, xs: Any) -> None:
        # copy(p) is shallow: build a new dict so one cell's value never reaches another cell.
        setattr(p, OVERRIDES_ATTR, {**getattr(p, OVERRIDES_ATTR, {}), name: x})

    return apply


def override_confirm(name: str) -> Any:
    def confirm(p: Any, xs: Any) -> None:
        for x in xs:
            problems = parse_script_args([True], {name: x}).problems
            if problems:
                raise ValueError(f"[ToDo] XYZ axis: {problems[0]}")

    return confirm


AXES = (
    ("Enabled", str, "enabled", lambda: ["True", "False"]),
    ("Factor", float, "factor", None),
    ("Level 2 factor", float, "factor_level2", None),
    ("Method", str, "method", lambda: list(METHODS)),
    ("Start at", float, "start", None),
    ("Stop at", float, "stop", None),
    ("Hires pass", str, "hires_mode", lambda: list(HIRES_MODES)),
    ("Hires factor", float, "hires_factor", None),
)


def add_axis_options() -> None:
    found = [x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]
    if not found:
        return
    xyz_grid = found[0].module
    known = {opt.label for opt in xyz_grid.axis_options}
    for label, kind, name, choices in AXES:
        label = f"[ToDo] {label}"
        if label not in known:
            xyz_grid.axis_options.append(
                xyz_grid.AxisOption(
                    label, kind, override_applier(name), confirm=override_confirm(name), choices=choices
                )
            )


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_infotext_pasted(on_infotext_pasted)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_before_ui(add_axis_options)
# An API-only start (--nowebui) builds X/Y/Z plot's axis list before the before_ui callbacks run, so the axes are
# also added now, when X/Y/Z plot (a webui script, loaded before extensions) is already there.
add_axis_options()
