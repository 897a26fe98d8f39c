"""`python -m lib_todo.bench`: check the options, run the cells, write JSON and PNG as it goes, print the table.

Errors are one line on stderr and a non-zero exit: 2 for a bad option (nothing was built), 1 when nothing
could be measured or the run failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import registry
from .measure import CLOCKS, _free_memory, cell_row, clock_for, clock_seconds, make_rows, measure_cell
from .model import BATCH
from .options import PROG, OptionError, parse_args
from .report import environment, markdown_table, plot, write_json
from .variants import make_configs


def _log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(msg, file=sys.stderr, flush=True)


def _summary(rows: list[dict[str, Any]]) -> str:
    """One line per cell for the log: baseline ms, then each speed-up, failure or skip."""
    parts = []
    for r in rows:
        if r["error"] or r["skipped"]:
            parts.append(f"{r['config']} {'failed' if r['error'] else 'skipped'}")
        elif r["config"] == "baseline":
            parts.append(f"base {r['ms']:.1f} ms")
        elif r["speedup"] is not None:
            parts.append(f"{r['config']} {r['speedup']:.2f}x")
    return ", ".join(parts)


def _title(meta: dict[str, Any], width: int) -> str:
    return f"{meta['device']}, width {width}, batch {BATCH}, {meta['clock']}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by checked `args`; returns what was written to the JSON."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = make_configs(args.factor_list, args.configs_set)
    out = Path(args.out)
    meta = {
        **environment(device),
        "clock": clock_for(device),
        "estimator": "speedup = median of within-round ratios; ms = baseline median ms / speedup",
        "args": {k: v for k, v in vars(args).items() if k in ARG_FIELDS},
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    rows: list[dict[str, Any]] = []
    cells_left = sum(len(args.model_sizes[m]) for m in args.models_list) * len(args.kernel_list)
    t0, spent0 = time.perf_counter(), clock_seconds(device)
    _log(
        f"bench on {meta['device']}: {cells_left} cells, {len(configs) + 1} configs each, {args.warmup} warm-up and "
        f"{args.repeats} timed rounds, budget {args.budget_s:g} s; clock: {CLOCKS[meta['clock']]}"
    )
    for name in args.models_list:
        cells = [(k, size) for k in args.kernel_list for size in args.model_sizes[name]]
        model, why_not = _build(name, args.width, device)
        for kernel, size in cells:
            if model is None:
                rows.append(cell_row(name, kernel, size, skipped=why_not))
            elif kernel not in registry.MODELS[name].kernels:
                rows.append(cell_row(name, kernel, size, skipped=f"kernel {kernel} not available for {name}"))
            else:
                share = max(0.0, args.budget_s - (clock_seconds(device) - spent0)) / cells_left
                rows.extend(_run_cell(model, args, configs, kernel, size, share))
            cells_left -= 1
            meta["elapsed_s"] = time.perf_counter() - t0
            write_json(out, meta, rows)
        del model
        _free_memory(device)
        plot(rows, out.with_suffix(".png"), _title(meta, args.width))
    meta["elapsed_s"] = time.perf_counter() - t0
    meta["clock_s"] = clock_seconds(device) - spent0
    write_json(out, meta, rows)
    plot(rows, out.with_suffix(".png"), _title(meta, args.width))
    return {**meta, "rows": rows}


ARG_FIELDS = (
    "device", "models", "sizes", "factors", "kernels", "configs", "repeats", "warmup", "width", "threads",
    "budget_s", "out", "quick", "profile",
)  # fmt: skip


def _build(name: str, width: int, device: torch.device) -> tuple[Any, str | None]:
    """(model, None), or (None, why) when its packages are missing or it cannot be built."""
    why = registry.missing(registry.MODELS[name])
    if why:
        _log(f"{name}: skipped, {why}")
        return None, why
    tb = time.perf_counter()
    try:
        model = registry.build(name, width, device)
    except Exception as err:  # a model that cannot be built here: listed, the others run
        _log(f"{name}: cannot build ({type(err).__name__}: {err})")
        return None, f"cannot build: {type(err).__name__}: {err}"[:300]
    _log(f"{name}: built in {time.perf_counter() - tb:.1f} s")
    return model, None


def _run_cell(model: Any, args: argparse.Namespace, configs: list, kernel: str, size: tuple[int, int], share: float):
    """The rows of one cell; a failure of the whole cell (the baseline runs out of memory) is one row."""
    tc = time.perf_counter()
    try:
        with model.kernel(kernel):
            series = measure_cell(model, configs, size, args.repeats, args.warmup, share)
        rows = make_rows(model.name, kernel, size, series)
    except Exception as err:  # e.g. the baseline runs out of memory: note it, go on
        rows = [cell_row(model.name, kernel, size, error=f"{type(err).__name__}: {err}"[:300])]
    _free_memory(model.device)
    rounds = rows[0]["rounds"]
    _log(f"  {model.name} {kernel} {size[0]}x{size[1]} ({rounds} rounds, {time.perf_counter() - tc:.1f} s): "
         + _summary(rows))  # fmt: skip
    return rows


def replot(path: Path, data: dict[str, Any]) -> int:
    """Redraw the PNG next to a results JSON (e.g. of a run cut short) and print its table."""
    rows = [{**dict.fromkeys(("ratio_low", "ratio_high", "skipped")), **r} for r in data["rows"]]
    width = data.get("args", {}).get("width", "?")
    meta = {"device": data.get("device", "?"), "clock": data.get("clock", "clock not recorded")}
    plot(rows, path.with_suffix(".png"), _title(meta, width))
    print(markdown_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: check the options, run, print the markdown table, say where the files are."""
    try:
        args = parse_args(argv)
    except OptionError as err:
        _log(f"{PROG}: error: {err}")
        return 2
    try:
        if args.replot:
            return replot(Path(args.replot), args.replot_data)
        result = run(args)
    except KeyboardInterrupt:
        _log(f"{PROG}: interrupted; what was measured so far is in {args.out}")
        return 130
    except Exception as err:  # never a traceback: one line, and the partial results stay on disk
        _log(f"{PROG}: error: {type(err).__name__}: {err}")
        return 1
    print(markdown_table(result["rows"]))
    measured = [r for r in result["rows"] if r["speedup"] is not None]
    spent = f" ({result['clock_s']:.0f} s of CPU time)" if result["clock"] == "cpu-time" else ""
    _log(f"wrote {args.out} and {Path(args.out).with_suffix('.png')} in {result['elapsed_s']:.0f} s{spent}")
    if not measured:
        _log(f"{PROG}: error: nothing could be measured (see the table for why)")
        return 1
    return 0
