"""The measurements behind the parts of the auto rule that are ours, and the two nearest methods, on the CPU.

    python tools/measure_auto_rule.py [--width 32] [--rounds 2] [--threads 2] [--batch 1] [--sizes 1024,2048]

On diffusers' SD1.5 UNet architecture (random weights, channel width `--width`; 320 is the real model), one
UNet call per configuration, interleaved in rotating order in each round, after one untimed warm-up call
each at 256 px:
  - 2048 px, factor 4: level 2 = 1 (the authors' demo) against level 2 = 2 (our auto at ~2048 px);
  - 1024 px, factor 2, level 2 off: method "nearest" (the authors') against "nearest-exact" (our default).
Speed-up = median over rounds of (baseline time / configuration time) within the round, with the range over
rounds in brackets; the time shown is the median time. Output change = ||out - baseline|| / ||baseline||
(relative L2), as the benchmark reports it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lib_todo  # noqa: E402
from lib_todo.bench.unets import build, example_inputs  # noqa: E402

WARM_UP_PX = 256
SIZES = (1024, 2048)
CASES = {  # px: [(label, settings or None for the baseline)]
    2048: [
        ("baseline", None),
        ("factor 4, level 2 = 1", lib_todo.TodoSettings(factor=4, factor_level2=1)),
        ("factor 4, level 2 = 2", lib_todo.TodoSettings(factor=4, factor_level2=2)),
    ],
    1024: [
        ("baseline", None),
        ("factor 2, nearest-exact", lib_todo.TodoSettings(factor=2, factor_level2=1, method="nearest-exact")),
        ("factor 2, nearest", lib_todo.TodoSettings(factor=2, factor_level2=1, method="nearest")),
    ],
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"measure_auto_rule: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: a whole number from 1")
    return value


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
    if value % 8:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: a multiple of 8 (SD1.5 has 8 heads)")
    return value


def call(unet: torch.nn.Module, args: tuple, kwargs: dict, settings: lib_todo.TodoSettings | None) -> tuple:
    """(seconds, output) of one UNet call, with ToDo installed for it when `settings` is given."""
    handle = lib_todo.apply(unet, settings) if settings else None
    try:
        with torch.no_grad():
            start = time.perf_counter()
            out = unet(*args, **kwargs).sample
            return time.perf_counter() - start, out
    finally:
        if handle:
            handle.remove()


def measure(unet: torch.nn.Module, px: int, batch: int, rounds: int) -> None:
    cases = CASES[px]
    warm_args, warm_kwargs = example_inputs(unet, "sd15", batch, WARM_UP_PX, WARM_UP_PX)
    for _, settings in cases:  # warm-up at a small size: the same kernels, at a fraction of the cost
        call(unet, warm_args, warm_kwargs, settings)
    args, kwargs = example_inputs(unet, "sd15", batch, px, px)
    times: dict[str, list[float]] = {label: [] for label, _ in cases}
    outs: dict[str, torch.Tensor] = {}
    for r in range(rounds):
        for label, settings in cases[r % len(cases) :] + cases[: r % len(cases)]:
            seconds, outs[label] = call(unet, args, kwargs, settings)  # the same output every round
            times[label].append(seconds)
            print(f"  round {r + 1}: {px} px | {label} | {seconds * 1000:.0f} ms", flush=True)
    base = outs["baseline"]
    for label, _ in cases:
        ratios = [b / t for b, t in zip(times["baseline"], times[label], strict=True)]
        change = float((outs[label] - base).norm() / base.norm())
        print(
            f"{px} px | {label} | {statistics.median(times[label]) * 1000:.0f} ms | {statistics.median(ratios):.2f}x"
            f" ({min(ratios):.2f}-{max(ratios):.2f}) | {change:.4f}",
            flush=True,
        )
    if px == 1024:
        gap = float((outs["factor 2, nearest"] - outs["factor 2, nearest-exact"]).norm() / base.norm())
        print(f"{px} px | nearest vs nearest-exact | | | {gap:.4f}", flush=True)


def main() -> None:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=head_width, default=32, help="channel width (default 32; 320 = real)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    parser.add_argument("--sizes", type=sizes, default=SIZES, help="which of 1024,2048 (default both)")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    unet = build("sd15", width=opts.width)
    print(f"CPU, torch {torch.__version__}, {opts.threads} threads, SD1.5 UNet width {opts.width}, batch {opts.batch}")
    print("size | configuration | ms | speed-up (range) | output change (rel. L2 vs baseline)")
    for px in opts.sizes:
        measure(unet, px, opts.batch, opts.rounds)


if __name__ == "__main__":
    main()
