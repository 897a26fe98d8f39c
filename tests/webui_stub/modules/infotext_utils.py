"""Stand-in for modules/infotext_utils.py: reading infotext back, and what pasting it does to the UI.

Infotext is "prompt\\nNegative prompt: ...\\nKey: value, Key: value, ...". A value holding ",", ":" or a
newline is written as a JSON string (`quote`) and read back with `unquote`; a `WxH` value is read as
`<key>-1` and `<key>-2`. Styles, emphasis and old-version fixes of the real parser are not modelled.

`apply_paste`/`paste` convert values as the UI paste button does; `api_script_args` as the API does when
a request carries `infotext`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modules import errors, script_callbacks

# one `Key: value` entry of the parameters line: the value is a JSON string or runs to the next comma
PARAM = re.compile(
    r"""\s*
    (?P<key>\w[-\w /]+)            # a key starts with a word character
    :\s*
    (?P<value>"(?:\\.|[^\\"])+"    # "a JSON string, with \\ escapes"
             |[^,]*)               # or plain text
    (?:,|$)""",
    re.VERBOSE,
)
SIZE = re.compile(r"^(\d+)x(\d+)$")

UNCHANGED = object()
"""`apply_paste`'s value for a field that pasting leaves alone (the webui sends an empty `gr.update()`)."""

_NEEDS_QUOTES = (",", ":", "\n")


def quote(text: Any) -> Any:
    """`text` as is, or JSON-quoted when it would break the `key: value, ...` line."""
    as_str = str(text)
    return json.dumps(text, ensure_ascii=False) if any(c in as_str for c in _NEEDS_QUOTES) else text


def unquote(text: str) -> str:
    if not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """Infotext -> {"Prompt": ..., "Negative prompt": ..., key: value, ...} (values stay strings)."""
    lines = x.strip().split("\n")
    params_line = lines[-1]
    if len(PARAM.findall(params_line)) >= 3:  # fewer pairs than that: the last line is prompt text
        lines = lines[:-1]
    else:
        params_line = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for raw in lines:
        text = raw.strip()
        if text.startswith("Negative prompt:"):
            target = negative_lines
            text = text.removeprefix("Negative prompt:").strip()
        target.append(text)

    result: dict[str, Any] = {}
    for found in PARAM.finditer(params_line):
        key, value = found.group("key"), found.group("value")
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        size = SIZE.match(value)
        if size:
            result[key + "-1"], result[key + "-2"] = size.groups()
        else:
            result[key] = value
    result["Prompt"] = "\n".join(prompt_lines)
    result["Negative prompt"] = "\n".join(negative_lines)
    for key in skip_fields or ():
        result.pop(key, None)
    return result


def _is_update(value: Any) -> bool:
    """A `gr.update(...)` result: a dict marked "generic_update" in gradio 3.41."""
    return isinstance(value, dict) and str(value.get("__type__", "")).endswith("update")


def _convert_for(component: Any, value: Any) -> Any:
    """The UI's cast to the type of the component's current value ("False" is False for a checkbox)."""
    current = type(component.value)
    if current is bool:
        return value != "False" and bool(value)
    if current is int:
        return float(value)
    return current(value)


def apply_paste(paste_fields: list[tuple[Any, Any]], params: dict[str, Any]) -> list[Any]:
    """Per `(component, key)` field, its value after pasting `params`, or UNCHANGED.

    `key` is an infotext key or a function of `params`; None leaves the field alone, a `gr.update(...)`
    gives its "value", anything else is converted by `_convert_for` (a failing conversion: left alone).
    """
    out = []
    for component, key in paste_fields:
        if callable(key):
            try:
                value = key(params)
            except Exception:
                errors.report(f"Error executing {key}", exc_info=True)
                value = None
        else:
            value = params.get(key)
        if value is None:
            out.append(UNCHANGED)
        elif _is_update(value):
            out.append(value.get("value", UNCHANGED))
        else:
            try:
                out.append(_convert_for(component, value))
            except (TypeError, ValueError):
                out.append(UNCHANGED)
    return out


def paste(infotext: str, paste_fields: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """The paste button: parse, let `on_infotext_pasted` callbacks see it, then {component: new value}."""
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    pairs = zip((c for c, _ in paste_fields), apply_paste(paste_fields, params), strict=True)
    return {component: value for component, value in pairs if value is not UNCHANGED}


def api_script_args(infotext: str, script_runner: Any) -> dict[int, Any]:
    """What the API writes into `script_args` for a request's `infotext`: {index: value}.

    The API casts differently from the UI: `type(current value)(value)` for any value not already of that
    type, so "False" turns a checkbox on. No `on_infotext_pasted` callbacks run here.
    """
    params = parse_generation_parameters(infotext)
    position = {id(c): i for i, c in enumerate(script_runner.inputs)}
    found: dict[int, Any] = {}
    for component, key in script_runner.infotext_fields:
        index = position.get(id(component))
        wanted = type(getattr(component, "value", None))
        if index is None or wanted is type(None):
            continue
        value = key(params) if callable(key) else params.get(key)
        if _is_update(value):
            value = value.get("value")
        if value is None:
            continue
        found[index] = value if isinstance(value, wanted) else wanted(value)
    return found
