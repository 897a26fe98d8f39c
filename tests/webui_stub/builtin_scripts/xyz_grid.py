"""Stand-in for A1111 1.10's scripts/xyz_grid.py: the axis API that extensions extend, and per-cell jobs.

Loaded through `modules.scripts.load_script`, so the module is named "xyz_grid.py" and an extension finds
it as in the webui: `[x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]`.

Each cell runs `process_images` on `copy(p)` with the axes' `apply(pc, x, xs)` done: a shallow copy, so
dicts such as `extra_generation_params`, `override_settings` and `script_args` are shared by all cells. A
cell that raises is reported (`errors.display`) and yields no images. Only a few built-in axes exist.
"""

from __future__ import annotations

import csv
from copy import copy
from typing import Any

import gradio as gr
from modules import errors, processing, scripts
from modules.processing import Processed, process_images


def apply_field(field: str) -> Any:
    """An axis that sets attribute `field` of the cell's job."""
    return lambda p, x, xs: setattr(p, field, x)


def apply_override(field: str, boolean: bool = False) -> Any:
    """An axis that overrides setting `field` for the cell (written into `p.override_settings`)."""

    def write(p: Any, x: Any, xs: Any) -> None:
        p.override_settings[field] = (x.lower() == "true") if boolean else x

    return write


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


axis_options = [
    AxisOption("Nothing", str, lambda p, x, xs: None),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("Hypertile U-Net", str, apply_override("hypertile_enable_unet", boolean=True)),
]


def find_option(label: str) -> AxisOption:
    return next(opt for opt in axis_options if opt.label == label)


def parse_values(opt: AxisOption, text: str, p: Any = None) -> list:
    """An axis's values from its text field (comma separated, CSV quoting), converted and confirmed."""
    fields = [item.strip() for row in csv.reader([text], skipinitialspace=True) for item in row] if text else []
    values = [opt.type(item) for item in fields] or [None]
    if opt.confirm:
        opt.confirm(p, values)
    return values


def run_cell(p: Any, *axes: tuple[AxisOption, Any, list]) -> tuple[Any, Processed]:
    """One cell: `copy(p)` with each axis `(opt, x, xs)` applied, then `process_images`. A failure is
    reported and gives an empty result, as in the webui. Returns (the cell's job, its result)."""
    cell = copy(p)
    cell.styles = list(cell.styles)
    for opt, x, xs in axes:
        opt.apply(cell, x, xs)
    try:
        return cell, process_images(cell)
    except Exception as e:
        errors.display(e, "generating image for xyz plot")
        return cell, Processed(p, [], p.seed, "")


def run_grid(p: Any, x: tuple[AxisOption, list], y: Any = None, z: Any = None) -> Processed:
    """Every cell (x varies fastest), and a grid infotext naming the axes, taken from the first cell."""
    unused = (axis_options[0], [None])
    axes = [("X", *x), ("Y", *(y or unused)), ("Z", *(z or unused))]
    (_, x_opt, xs), (_, y_opt, ys), (_, z_opt, zs) = axes
    images: list = []
    infotexts: list = []
    summary = None
    for zv in zs:
        for yv in ys:
            for xv in xs:
                cell, result = run_cell(p, (x_opt, xv, xs), (y_opt, yv, ys), (z_opt, zv, zs))
                if summary is None and result.images:
                    cell.extra_generation_params = {**cell.extra_generation_params, "Script": "X/Y/Z plot"}
                    for name, opt, values in axes:
                        if opt is not axis_options[0]:
                            cell.extra_generation_params[f"{name} Type"] = opt.label
                            cell.extra_generation_params[f"{name} Values"] = ", ".join(str(v) for v in values)
                    summary = processing.create_infotext(cell, cell.all_prompts, cell.all_seeds)
                first = result.index_of_first_image
                images.extend(result.images[first:])
                infotexts.extend(result.infotexts[first:])
    return Processed(p, images, p.seed, summary or "", infotexts=infotexts)


class Script(scripts.Script):
    """The selectable "X/Y/Z plot" script: args are (x type, x values, y type, y values, z type, z values),
    each type an index into the axis options offered in this tab."""

    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.offered = list(axis_options)
        labels = [opt.label for opt in self.offered]
        controls = []
        for axis, first in (("x", 1), ("y", 0), ("z", 0)):
            kind = gr.Dropdown(label=f"{axis.upper()} type", choices=labels, value=labels[first], type="index")
            controls += [kind, gr.Textbox(label=f"{axis.upper()} values", lines=1)]
        return controls

    def run(self, p, x_type, x_values, y_type, y_values, z_type, z_values):
        chosen = []
        for kind, text in ((x_type, x_values), (y_type, y_values), (z_type, z_values)):
            opt = self.offered[kind]
            chosen.append((opt, parse_values(opt, text, p)))
        return run_grid(p, *chosen)
