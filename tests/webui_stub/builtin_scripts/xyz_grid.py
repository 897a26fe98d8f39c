"""Stand-in for A1111 1.10's scripts/xyz_grid.py: only the axis API that extensions extend.

Loaded through `modules.scripts.load_script`, so the module is named "xyz_grid.py" and an extension finds
it as in the webui: `[x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]`, then
appends `AxisOption`s to `axis_options` (from an `on_before_ui` callback).

Running a grid is not modelled: in the webui each cell is `process_images(copy(p))` with the axes'
`apply(pc, x, xs)` done on the shallow copy `pc`, and tests that need a cell do exactly that themselves.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from modules import scripts


def format_value_add_label(p: Any, opt: AxisOption, x: Any) -> str:
    return f"{opt.label}: {round(x, 8) if isinstance(x, float) else x}"


class AxisOption:
    """One choice of the X/Y/Z type dropdowns; `apply(p, x, xs)` sets value `x` on a cell's job, and the
    optional `confirm(p, xs)` rejects bad values (raising) before any cell runs."""

    def __init__(
        self,
        label: str,
        type: Any,  # noqa: A002 (the real keyword)
        apply: Any,
        format_value: Any = format_value_add_label,
        confirm: Any = None,
        cost: float = 0.0,
        choices: Any = None,
        prepare: Any = None,
    ) -> None:
        self.label, self.type, self.apply = label, type, apply
        self.format_value, self.confirm, self.choices = format_value, confirm, choices
        self.cost, self.prepare = cost, prepare


axis_options = [AxisOption("Nothing", str, lambda p, x, xs: None)]


class Script(scripts.Script):
    """The selectable "X/Y/Z plot" script; its UI takes its slice of `p.script_args` (type indices and
    value texts for x, y and z) as in the webui."""

    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        labels = [opt.label for opt in axis_options]
        controls = []
        for axis in ("x", "y", "z"):
            kind = gr.Dropdown(label=f"{axis.upper()} type", choices=labels, value=labels[0], type="index")
            controls += [kind, gr.Textbox(label=f"{axis.upper()} values", lines=1)]
        return controls
