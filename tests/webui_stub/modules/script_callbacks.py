"""Stand-in for modules/script_callbacks.py: the callback registry the extension registers with.

Callbacks run in registration order (the real ordering settings are not modelled), each in its own
try/except that hands a failure to `errors.report`; `script_unloaded` and `before_ui` run newest first,
as in 1.10. Only the categories the extension and the stand-in use exist.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

from modules import errors


@dataclass
class CFGDenoiserParams:
    """What `on_cfg_denoiser` callbacks get before each CFG denoiser call (fields named as in A1111)."""

    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class ScriptCallback:
    script: str  # the file that registered it
    callback: Any
    name: str = "unnamed"


KINDS = ("model_loaded", "ui_settings", "cfg_denoiser", "infotext_pasted", "script_unloaded", "before_ui")
callback_map: dict[str, list[ScriptCallback]] = {"callbacks_" + kind: [] for kind in KINDS}


def _registering_file() -> str:
    here = os.path.abspath(__file__)
    outside = (f.filename for f in inspect.stack(0) if os.path.abspath(f.filename) != here)
    return next(outside, "?")


def _add(kind: str, fn: Any, name: str | None) -> None:
    origin = _registering_file()
    label = f"{os.path.basename(origin)}/{kind}" + (f"/{name}" if name else "")
    callback_map["callbacks_" + kind].append(ScriptCallback(origin, fn, label))


def _call_all(kind: str, *args: Any, newest_first: bool = False) -> None:
    registered = list(callback_map["callbacks_" + kind])
    if newest_first:
        registered.reverse()
    for entry in registered:
        try:
            entry.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {kind} for {entry.script}", exc_info=True)


def remove_callbacks_for_function(callback_func: Any) -> None:
    """Unregister `callback_func` from every category."""
    for registered in callback_map.values():
        registered[:] = [entry for entry in registered if entry.callback != callback_func]


# registration: on_<kind>(fn, name=None)
def on_model_loaded(callback: Any, *, name: str | None = None) -> None:
    _add("model_loaded", callback, name)


def on_ui_settings(callback: Any, *, name: str | None = None) -> None:
    _add("ui_settings", callback, name)


def on_cfg_denoiser(callback: Any, *, name: str | None = None) -> None:
    _add("cfg_denoiser", callback, name)


def on_infotext_pasted(callback: Any, *, name: str | None = None) -> None:
    _add("infotext_pasted", callback, name)


def on_script_unloaded(callback: Any, *, name: str | None = None) -> None:
    _add("script_unloaded", callback, name)


def on_before_ui(callback: Any, *, name: str | None = None) -> None:
    _add("before_ui", callback, name)


# what the webui calls at the matching moments
def model_loaded_callback(sd_model: Any) -> None:
    _call_all("model_loaded", sd_model)


def ui_settings_callback() -> None:
    _call_all("ui_settings")


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _call_all("cfg_denoiser", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _call_all("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _call_all("script_unloaded", newest_first=True)


def before_ui_callback() -> None:
    _call_all("before_ui", newest_first=True)
