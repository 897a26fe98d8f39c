"""ToDo: Token Downsampling, as an always-visible script for A1111 (>= 1.10) and Forge.

The core is `lib_todo` (pure torch). This file is the webui glue: the accordion, per-pass installation
(A1111: forward pre-hooks on the UNet; Forge: an attn1 patch on a clone of the UNet patcher), the step
window through the CFG denoiser callback, infotext, XYZ axes and cleanup.
"""

from typing import Any

import gradio as gr
from modules import script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

import lib_todo
from lib_todo.forge import patch_unet_patcher
from lib_todo.infotext import ALL_KEYS, KEYS, from_infotext, to_infotext
from lib_todo.job import TodoJob
from lib_todo.script_args import ARG_NAMES, parse_script_args
from lib_todo.settings import HIRES_MODES, METHODS, TodoSettings

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
                factor = self.slider("Factor (0 = auto)", "factor", 8, 1, d.factor)
                factor_level2 = self.slider("Level 2 factor (0 = auto)", "factor_level2", 8, 1, d.factor_level2)
                method = self.dropdown("Method", "method", METHODS, d.method)
            with gr.Row(elem_classes="todo-row"):
                start = self.slider("Start at", "start", 1, 0.05, d.start)
                stop = self.slider("Stop at", "stop", 1, 0.05, d.stop)
            with gr.Row(elem_classes="todo-row", **hires):
                hires_mode = self.dropdown("Hires pass", "hires_mode", HIRES_MODES, d.hires_mode, **hires)
                hires_factor = self.slider("Hires factor (0 = auto)", "hires_factor", 8, 1, d.hires_factor, **hires)
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
        job = TodoJob(request.settings)
        reason = unsupported_reason(p)
        if reason:
            log(f"{reason}; ToDo is off for this job.")
            return
        setattr(p, JOB_ATTR, job)
        CURRENT["job"] = job

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is not None:
            job.passes.clear()  # the infotext of a batch tells that batch's passes

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is None:
            return
        release_pass(p, job)
        hires = bool(getattr(p, "is_hr_pass", False))
        settings = job.settings.for_pass(hires)
        if settings is None:
            return
        if hires and getattr(shared.opts, "hypertile_enable_unet_secondpass", False):
            tell(job, "HyperTile U-Net is on for the hires pass; ToDo sits that pass out")
            return
        try:
            state = install_pass(p, job, settings)
        except (TypeError, AttributeError) as err:
            tell(job, f"cannot patch this model's UNet ({err}); ToDo is off")
            return
        job.start_pass("hires" if hires else "", state)

    def post_sample(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = getattr(p, JOB_ATTR, None)
        if job is not None:
            write_infotext(p, job)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        finish_job(p)


def tell(job: TodoJob, message: str) -> None:
    if job.tell_once(message):
        log(message)


def install_pass(p: Any, job: TodoJob, settings: TodoSettings) -> lib_todo.TodoState:
    """Install ToDo for the pass about to run and return its live state."""
    native_px = native_size(p.sd_model)
    if is_forge(p.sd_model):
        objects = p.sd_model.forge_objects
        base = objects.unet
        if base is job.forge_clone:  # Forge's hires pass may call us before its reset: never stack patches
            base = job.forge_base
        if job.forge_original is None:
            job.forge_original = base
        job.forge_base = base
        job.forge_clone, state = patch_unet_patcher(base, settings, native_px)
        objects.unet = job.forge_clone
        return state
    job.handle = lib_todo.apply(p.sd_model.model.diffusion_model, settings, native_px=native_px)
    return job.handle.state


def release_pass(p: Any, job: TodoJob) -> None:
    """Undo the previous pass's installation (A1111); Forge resets its patcher before every pass itself."""
    if job.handle is not None:
        job.handle.remove()
        job.handle = None


def finish_job(p: Any) -> None:
    """Remove everything the job installed, on A1111 and Forge."""
    job = getattr(p, JOB_ATTR, None)
    for candidate in (job, CURRENT["job"]):
        if candidate is None:
            continue
        release_pass(p, candidate)
        if candidate.forge_original is not None and is_forge(p.sd_model):
            p.sd_model.forge_objects.unet = candidate.forge_original
            candidate.forge_original = None
    CURRENT["job"] = None
    if job is not None:
        delattr(p, JOB_ATTR)


def remove_everywhere(sd_model: Any = None) -> None:
    """Defensive: remove any lib_todo hook from the loaded model's UNet (A1111)."""
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
    remove_everywhere(sd_model)


def on_script_unloaded() -> None:
    remove_everywhere()
    for callback in (on_cfg_denoiser, on_model_loaded, on_infotext_pasted, on_script_unloaded, add_axis_options):
        script_callbacks.remove_callbacks_for_function(callback)


def is_forge(sd_model: Any) -> bool:
    return hasattr(sd_model, "forge_objects")


def a1111_unet(sd_model: Any) -> Any:
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def native_size(sd_model: Any) -> int | None:
    """Training size in pixels, from the webui's model flags (None lets the core guess from the layout)."""
    if getattr(sd_model, "is_sdxl", False):
        return 1024
    if getattr(sd_model, "is_sd2", False) and getattr(sd_model, "parameterization", "") == "v":
        return 768
    if getattr(sd_model, "is_sd1", False) or getattr(sd_model, "is_sd2", False):
        return 512
    return None


def unsupported_reason(p: Any) -> str | None:
    """Why ToDo cannot run on this job, or None."""
    model = p.sd_model
    if getattr(model, "is_sd3", False):
        return "SD3 has no UNet self-attention to downsample"
    if is_forge(model):
        if not any(getattr(model, flag, False) for flag in ("is_sd1", "is_sd2", "is_sdxl")):
            return "this model is not SD1.x, SD2.x or SDXL (Flux and other DiT models are not supported)"
    elif a1111_unet(model) is None:
        return "no UNet found on this model"
    if tensorrt_active():
        return "a TensorRT UNet is active and bypasses the PyTorch UNet"
    if getattr(shared.opts, "hypertile_enable_unet", False):
        return "HyperTile U-Net is on (both tile self-attention; use one of them)"
    return None


def tensorrt_active() -> bool:
    try:
        from modules import sd_unet
    except ImportError:
        return False
    return getattr(sd_unet, "current_unet", None) is not None


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
