"""modules/infotext_utils.py: reading infotext back, and what "paste" does with the values.

- `quote`/`unquote`: JSON-quote a value that contains ",", ":" or a newline.
- `parse_generation_parameters`: the real parsing rules (the last line holds `key: value` pairs matched by
  the same pattern; quoted values are unquoted; `WxH` values split into `key-1`/`key-2`; the defaults the
  real function adds for absent keys; `skip_fields`, defaulting to `opts.infotext_skip_pasting`). Style
  extraction, emphasis detection and version back-compat are left out (no styles or old versions here).
- `apply_paste` / `paste`: the value conversion of `connect_paste`'s `paste_func` (UI paste button).
- `api_script_args`: what the API's `apply_infotext` puts into script args (`mentioned_script_args`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import gradio as gr

from modules import errors, script_callbacks, shared

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
type_of_gr_update = type(gr.update())

UNCHANGED = object()
"""What `apply_paste` gives for a field that paste leaves alone (the real code returns `gr.update()`)."""


def quote(text: Any) -> Any:
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


DEFAULTS_WHEN_ABSENT = {
    "Clip skip": "1",
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": False,
}


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    if skip_fields is None:
        skip_fields = shared.opts.infotext_skip_pasting

    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f'Error parsing "{k}: {v}"')

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, value in DEFAULTS_WHEN_ABSENT.items():
        res.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    for key in skip_fields:
        res.pop(key, None)
    return res


def apply_paste(paste_fields: list[tuple[Any, Any]], params: dict[str, Any]) -> list[Any]:
    """The value each field gets from pasted `params`, converted as `connect_paste` does; UNCHANGED if none.

    Per field `(component, key)`: `key` is an infotext key or a callable `key(params)`; a None value leaves
    the component alone; a `gr.update(...)` is used as is (its "value", if any); otherwise the value is cast
    to the type of the component's current value: bool gets `"False" -> False` else `bool(v)`, int gets
    `float(v)`, anything else `type(v)`; a failing cast leaves the component alone.
    """
    res = []
    for component, key in paste_fields:
        if callable(key):
            try:
                v = key(params)
            except Exception:
                errors.report(f"Error executing {key}", exc_info=True)
                v = None
        else:
            v = params.get(key, None)

        if v is None:
            res.append(UNCHANGED)
        elif isinstance(v, type_of_gr_update):
            res.append(v.get("value", UNCHANGED))
        else:
            try:
                valtype = type(component.value)
                if valtype is bool and v == "False":
                    val = False
                elif valtype is int:
                    val = float(v)
                else:
                    val = valtype(v)
                res.append(val)
            except Exception:
                res.append(UNCHANGED)
    return res


def paste(infotext: str, paste_fields: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """The UI paste button: parse, run `on_infotext_pasted` callbacks, map to fields.

    Returns {component: new value} for the components that paste changes.
    """
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    values = apply_paste(paste_fields, params)
    return {c: v for (c, _), v in zip(paste_fields, values, strict=True) if v is not UNCHANGED}


def api_script_args(infotext: str, script_runner: Any) -> dict[int, Any]:
    """The API's `apply_infotext`: {index into script_args: value} for script fields found in `infotext`.

    Note the API's cast differs from the UI's: it is `type(component.value)(value)` for any value that is not
    already of that type, so a string "False" becomes True for a checkbox unless the field's callable
    returns a real bool. (No `on_infotext_pasted` callbacks on this path.)
    """
    params = parse_generation_parameters(infotext)
    indexes = {id(component): i for i, component in enumerate(script_runner.inputs)}
    result = {}
    for component, key in script_runner.infotext_fields:
        if id(component) not in indexes:
            continue
        value = key(params) if callable(key) else params.get(key)
        if value is None:
            continue
        target_type = type(component.value)
        if target_type is type(None):
            continue
        if isinstance(value, dict) and value.get("__type__") == "generic_update":
            value = value.get("value")
        if value is not None and not isinstance(value, target_type):
            value = target_type(value)
        if value is not None:
            result[indexes[id(component)]] = value
    return result
