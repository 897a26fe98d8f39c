"""scripts/xyz_grid.py of A1111 1.10, cut down: the axis API extensions extend, and the per-cell job copies.

Loaded through `modules.scripts.load_script`, so, as in the webui, the module is named "xyz_grid.py" and
extensions find it with `[x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]`.

A cell is `pc = copy(p); pc.styles = pc.styles[:]; x_opt.apply(pc, x, xs); ...; process_images(pc)`:
a shallow copy, so `extra_generation_params`, `override_settings` and `script_args` are shared by all cells
of a grid. A cell that raises is reported (`errors.display`) and gives an empty result, as in the webui.
`run_cell` and `run_grid` expose that for tests; `Script` is the selectable "X/Y/Z plot" script.
"""

from __future__ import annotations

import csv
from collections import namedtuple
from copy import copy
from io import StringIO
from itertools import chain
from typing import Any

import gradio as gr
import modules.scripts as scripts
from modules import errors, processing
from modules.processing import Processed, process_images
from modules.shared import state

AxisInfo = namedtuple("AxisInfo", ["axis", "values"])


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_override(field, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = x.lower() == "true"
        p.override_settings[field] = x

    return fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_nothing(p, opt, x):
    return ""


def do_nothing(p, x, xs):
    pass


def str_permutations(x):
    return x


def csv_string_to_list_strip(data_str: str) -> list[str]:
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption(
        "Hypertile U-Net",
        str,
        apply_override("hypertile_enable_unet", boolean=True),
        choices=boolean_choice(reverse=True),
    ),
]


def find_option(label: str) -> AxisOption:
    return next(opt for opt in axis_options if opt.label == label)


def parse_values(opt: AxisOption, text: str, p: Any = None) -> list:
    """An axis's values from its text field (comma separated, CSV quoting), typed and confirmed."""
    values = [opt.type(x) for x in csv_string_to_list_strip(text)] if text else [None]
    if opt.confirm:
        opt.confirm(p, values)
    return values


def run_cell(p, *axes: tuple[AxisOption, Any, list]) -> tuple[Any, Processed]:
    """One cell: the shallow job copy with each axis (opt, x, xs) applied, then `process_images`.

    Returns (pc, processed); a failing cell is reported and gives an empty Processed, as in the webui."""
    pc = copy(p)
    pc.styles = pc.styles[:]
    for opt, x, xs in axes:
        opt.apply(pc, x, xs)
    try:
        res = process_images(pc)
    except Exception as e:
        errors.display(e, "generating image for xyz plot")
        res = Processed(p, [], p.seed, "")
    return pc, res


def run_grid(p, x: tuple[AxisOption, list], y=None, z=None) -> Processed:
    """All cells, z outermost then y then x (the default order for equal costs), and the grid infotext."""
    nothing = (axis_options[0], [None])
    (x_opt, xs), (y_opt, ys), (z_opt, zs) = x, y or nothing, z or nothing
    state.xyz_plot_x, state.xyz_plot_y, state.xyz_plot_z = AxisInfo(x_opt, xs), AxisInfo(y_opt, ys), AxisInfo(z_opt, zs)
    state.job_count = len(xs) * len(ys) * len(zs) * p.n_iter
    images, infotexts, grid_infotext = [], [], None
    for iz, zv in enumerate(zs):
        for iy, yv in enumerate(ys):
            for ix, xv in enumerate(xs):
                pc, res = run_cell(p, (x_opt, xv, xs), (y_opt, yv, ys), (z_opt, zv, zs))
                if grid_infotext is None and ix == 0 and iy == 0 and iz == 0 and res.images:
                    pc.extra_generation_params = copy(pc.extra_generation_params)
                    pc.extra_generation_params["Script"] = "X/Y/Z plot"
                    for name, opt, values in (("X", x_opt, xs), ("Y", y_opt, ys), ("Z", z_opt, zs)):
                        if opt.label != "Nothing":
                            pc.extra_generation_params[f"{name} Type"] = opt.label
                            pc.extra_generation_params[f"{name} Values"] = ", ".join(map(str, values))
                    grid_infotext = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)
                images += res.images[res.index_of_first_image :]
                infotexts += res.infotexts[res.index_of_first_image :]
    return Processed(p, images, p.seed, grid_infotext or "", infotexts=infotexts)


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]
        labels = [x.label for x in self.current_axis_options]
        controls = []
        for axis, default in (("x", 1), ("y", 0), ("z", 0)):
            controls.append(
                gr.Dropdown(
                    label=f"{axis.upper()} type",
                    choices=labels,
                    value=labels[default],
                    type="index",
                    elem_id=self.elem_id(f"{axis}_type"),
                )
            )
            controls.append(gr.Textbox(label=f"{axis.upper()} values", lines=1, elem_id=self.elem_id(f"{axis}_values")))
        return controls

    def run(self, p, x_type, x_values, y_type, y_values, z_type, z_values):
        axes = []
        for kind, text in ((x_type, x_values), (y_type, y_values), (z_type, z_values)):
            opt = self.current_axis_options[kind]
            axes.append((opt, parse_values(opt, text, p)))
        return run_grid(p, *axes)
