"""modules/script_callbacks.py: the callback registry, with the real names and parameter classes.

As in the webui, every callback runs in `try/except Exception` and a failure is reported through
`errors.report` (the real `report_exception`), never raised. Ordering is registration order: the real
`sort_callbacks` only reorders for metadata.ini instructions or the user's `prioritized_callbacks_*`
settings, which the tests do not use. `script_unloaded` and `before_ui` run in reverse, as in 1.10.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors


class CFGDenoiserParams:
    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


CATEGORIES = (
    "app_started",
    "model_loaded",
    "ui_tabs",
    "ui_settings",
    "cfg_denoiser",
    "cfg_denoised",
    "cfg_after_cfg",
    "before_component",
    "after_component",
    "infotext_pasted",
    "script_unloaded",
    "before_ui",
    "on_reload",
    "list_optimizers",
    "list_unets",
)
callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{c}": [] for c in CATEGORIES}


def clear_callbacks() -> None:
    for callbacks in callback_map.values():
        callbacks.clear()


reset = clear_callbacks


def _caller_file() -> str:
    for frame in inspect.stack(0):
        if frame.filename != __file__:
            return frame.filename
    return "unknown file"


def _extension_name(filename: str) -> str:
    folder = os.path.dirname(os.path.abspath(filename))
    if os.path.basename(folder) == "scripts":
        return os.path.basename(os.path.dirname(folder)).lower()
    return "base"


def add_callback(callbacks: list, fun: Any, *, name: str | None = None, category: str = "unknown", filename=None):
    filename = filename or _caller_file()
    callback_name = f"{_extension_name(filename)}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"
    unique = callback_name
    for index in range(1000):
        if not any(x.name == unique for x in callbacks):
            break
        unique = f"{callback_name}-{index + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def ordered_callbacks(category: str) -> list[ScriptCallback]:
    return list(callback_map["callbacks_" + category])


def _run(category: str, job: str, *args: Any, reverse: bool = False) -> None:
    callbacks = ordered_callbacks(category)
    for c in reversed(callbacks) if reverse else callbacks:
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


def app_started_callback(demo: Any, app: Any) -> None:
    _run("app_started", "app_started_callback", demo, app)


def model_loaded_callback(sd_model: Any) -> None:
    _run("model_loaded", "model_loaded_callback", sd_model)


def ui_settings_callback() -> None:
    _run("ui_settings", "ui_settings_callback")


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("cfg_denoiser", "cfg_denoiser_callback", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("cfg_denoised", "cfg_denoised_callback", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("cfg_after_cfg", "cfg_after_cfg_callback", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("infotext_pasted", "infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("script_unloaded", "script_unloaded", reverse=True)


def before_ui_callback() -> None:
    _run("before_ui", "before_ui", reverse=True)


def remove_current_script_callbacks() -> None:
    """Remove every callback registered from the calling file (all categories, as the real one does)."""
    filename = _caller_file()
    if filename == "unknown file":
        return
    for callbacks in callback_map.values():
        callbacks[:] = [cb for cb in callbacks if cb.script != filename]


def remove_callbacks_for_function(callback_func: Any) -> None:
    for callbacks in callback_map.values():
        callbacks[:] = [cb for cb in callbacks if cb.callback != callback_func]


def _register(category: str):
    def on(callback: Any, *, name: str | None = None) -> None:
        add_callback(callback_map["callbacks_" + category], callback, name=name, category=category)

    on.__name__ = f"on_{category}"
    return on


on_app_started = _register("app_started")
on_model_loaded = _register("model_loaded")
on_ui_tabs = _register("ui_tabs")
on_ui_settings = _register("ui_settings")
on_cfg_denoiser = _register("cfg_denoiser")
on_cfg_denoised = _register("cfg_denoised")
on_cfg_after_cfg = _register("cfg_after_cfg")
on_before_component = _register("before_component")
on_after_component = _register("after_component")
on_infotext_pasted = _register("infotext_pasted")
on_script_unloaded = _register("script_unloaded")
on_before_ui = _register("before_ui")
on_before_reload = _register("on_reload")
on_list_optimizers = _register("list_optimizers")
on_list_unets = _register("list_unets")
