"""The measurements behind the parts of the auto rule that are ours, and the two nearest methods, on the CPU.

    python tools/measure_auto_rule.py [--width 32] [--rounds 2] [--threads 2] [--batch 1] [--sizes 1024,2048]

On diffusers' SD1.5 UNet architecture (random weights, channel width `--width`; 320 is the real model), through
the bench's one timing loop (`lib_todo.bench.measure`): one untimed round at 256 px (the same kernels at a fraction
of the cost), then `--rounds` timed rounds at each size, the baseline, its A/A row and each configuration once per
round in rotating order:
  - 2048 px, factor 4: level 2 = 1 (the authors' demo) against level 2 = 2 (our auto at ~2048 px);
  - 1024 px, factor 2, level 2 off: method "nearest" (the authors') against "nearest-exact" (our default).
Speed-up = median over rounds of (baseline time / configuration time) within the round, spread over rounds in
brackets, time = baseline median / speed-up, the A/A row's spread = the noise floor; output change =
||out - baseline|| / ||baseline|| (relative L2). Prints the bench's table, then the distance between the outputs
of "nearest" and "nearest-exact".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from one_line_cli import OneLineParser, positive_int  # noqa: E402

from lib_todo import TodoSettings  # noqa: E402
from lib_todo.bench import measure, report  # noqa: E402
from lib_todo.bench.families.unet import load_model  # noqa: E402
from lib_todo.bench.family import Config, Size  # noqa: E402

WARM_UP = Size(256, 256)
SIZES = (1024, 2048)
CASES = {  # px: the configurations compared with the baseline
    2048: [
        Config("factor 4, level 2 = 1 (the authors' demo)", "todo", TodoSettings(factor=4, factor_level2=1)),
        Config("factor 4, level 2 = 2 (auto)", "todo", TodoSettings(factor=4, factor_level2=2)),
    ],
    1024: [
        Config("factor 2, nearest-exact", "todo", TodoSettings(factor=2, factor_level2=1, method="nearest-exact")),
        Config("factor 2, nearest", "todo", TodoSettings(factor=2, factor_level2=1, method="nearest")),
    ],
}


def sizes(text: str) -> tuple[int, ...]:
    try:
        chosen = tuple(int(part) for part in text.split(","))
    except ValueError:
        chosen = ()
    if not chosen or any(px not in CASES for px in chosen):
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: a comma list of {', '.join(map(str, SIZES))}")
    return chosen


def head_width(text: str) -> int:
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: a multiple of 32 (the UNet's group norm)")
    return value


def nearest_gap(model, size: Size) -> float:
    """||nearest - nearest-exact|| / ||baseline|| at `size`: how far apart the two methods' outputs lie."""
    import lib_todo

    args, kwargs = model.inputs(size)
    with model.context():
        base = model.call(args, kwargs)
        outs = []
        for method in ("nearest", "nearest-exact"):
            with lib_todo.patched(model.unet, TodoSettings(factor=2, factor_level2=1, method=method)):
                outs.append(model.call(args, kwargs))
    return float((outs[0].float() - outs[1].float()).norm() / base.float().norm())


def main() -> None:
    parser = OneLineParser(prog="measure_auto_rule", description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=head_width, default=32, help="channel width (default 32; 320 = real)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    parser.add_argument("--sizes", type=sizes, default=SIZES, help="which of 1024,2048 (default both)")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    model = load_model("sd15", opts.width, torch.device("cpu"))
    model.batch = opts.batch
    clock = measure.clock_for(model.device)
    print(f"{report.device_name(model.device)}, torch {torch.__version__}, SD1.5 UNet width {opts.width}, "
          f"batch {opts.batch}, clock: {measure.CLOCKS[clock]}", flush=True)  # fmt: skip
    rows = []
    for px in opts.sizes:
        measure.measure_cell(model, CASES[px], WARM_UP, 1, 0, float("inf"), clock)  # warm-up, discarded
        series = measure.measure_cell(model, CASES[px], Size(px, px), opts.rounds, 0, float("inf"), clock)
        rows.extend(measure.make_rows("sd15", "sdpa", Size(px, px), series))
        print(report.markdown_table(rows[-len(series) :]), flush=True)
    if 1024 in opts.sizes:
        print(f"1024 px: nearest vs nearest-exact, output distance {nearest_gap(model, Size(1024, 1024)):.4f}")


if __name__ == "__main__":
    main()
