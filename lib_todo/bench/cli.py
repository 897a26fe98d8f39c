"""`python -m lib_todo.bench`: check the options, run the cells (or the studies), write JSON and PNG as it goes,
print the table; or `--replot` earlier results.

Errors are one line on stderr and a non-zero exit: 2 for a bad option (nothing was built), 1 when nothing
could be measured or the run failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import registry
from .family import Family, Size
from .measure import CLOCKS, _free_memory, cell_row, clock_for, clock_seconds, make_rows, measure_cell
from .options import PROG, OptionError, parse_args
from .report import SCHEMA, environment, markdown_table, plot, title, upgrade, write_json
from .studies import STUDIES

ESTIMATOR = "speedup = median of within-round ratios; ms = baseline median ms / speedup"
NOISE = (
    "noise = the largest distance from 1 of the A/A row's round ratios (the baseline timed against itself in the "
    "same rotation); within_noise: |speedup - 1| <= noise"
)


def _log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(msg, file=sys.stderr, flush=True)


def _summary(rows: list[dict[str, Any]]) -> str:
    """One line per cell for the log: baseline ms, the noise floor, then each speed-up, failure or skip."""
    parts = []
    for r in rows:
        if r["error"] or r["skipped"]:
            parts.append(f"{r['config']} {'failed' if r['error'] else 'skipped'}")
        elif r["config"] == "baseline":
            parts.append(f"base {r['ms']:.1f} ms")
        elif r["config"] == "baseline (A/A)" and r["noise"] is not None:
            parts.append(f"noise ±{100 * r['noise']:.1f}% (A/A {r['ratio_low']:.2f}-{r['ratio_high']:.2f})")
        elif r["speedup"] is not None:
            parts.append(f"{r['config']} {r['speedup']:.2f}x" + (" (within noise)" if r["within_noise"] else ""))
    return ", ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _meta(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What the JSON says besides its rows: schema, device, versions, clock, estimator, the options."""
    return {
        "schema": SCHEMA,
        **environment(device),
        "clock": clock_for(device, args.clock_name),
        "estimator": ESTIMATOR,
        "noise": NOISE,
        "args": {k: v for k, v in vars(args).items() if k in ARG_FIELDS},
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": _load(),
        "models": {},
    }


ARG_FIELDS = (
    "device", "models", "sizes", "factors", "kernels", "configs", "repeats", "warmup", "width", "threads", "clock",
    "budget_s", "out", "quick", "profile", "study",
)  # fmt: skip


def _load() -> list[float] | None:
    """The load average (1, 5, 15 min) where the OS has one: other jobs on the machine slow it unevenly."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by checked `args`; returns what was written to the JSON."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    meta = _meta(args, device)
    clock = meta["clock"]
    rows: list[dict[str, Any]] = []
    cells_left = sum(len(args.model_sizes[m]) for m in args.models_list) * len(args.kernel_list)
    t0, spent0 = time.perf_counter(), clock_seconds(clock)
    _log(
        f"bench on {meta['device']}: {_count(cells_left, 'cell')}, each with the baseline, its A/A row and its "
        f"configs; {args.warmup} warm-up and {_count(args.repeats, 'timed round')}, budget {args.budget_s:g} s; "
        f"clock: {CLOCKS[clock]}"
    )
    for name in args.models_list:
        family = registry.MODELS[name]
        configs = family.configs(args.factor_list, args.model_kinds[name])
        cells = [(k, size) for k in args.kernel_list for size in args.model_sizes[name]]
        model, why_not = _build(family, args.model_widths[name], device)
        if model is not None:
            meta["models"][name] = model.description
        for kernel, size in cells:
            if model is None:
                rows.append(cell_row(name, kernel, size, skipped=why_not))
            elif kernel not in family.kernels:
                rows.append(cell_row(name, kernel, size, skipped=f"kernel {kernel} not available for {name}"))
            else:
                share = max(0.0, args.budget_s - (clock_seconds(clock) - spent0)) / cells_left
                rows.extend(_run_cell(model, args, configs, kernel, size, share, clock))
            cells_left -= 1
            meta["elapsed_s"] = time.perf_counter() - t0
            write_json(out, meta, rows)
        del model
        _free_memory(device)
        plot(rows, out.with_suffix(".png"), title(meta))
    meta["elapsed_s"] = time.perf_counter() - t0
    meta["clock_s"] = clock_seconds(clock) - spent0
    meta["load_average_end"] = _load()
    write_json(out, meta, rows)
    plot(rows, out.with_suffix(".png"), title(meta))
    return {**meta, "rows": rows}


def _build(family: Family, width: int, device: torch.device) -> tuple[Any, str | None]:
    """(model, None), or (None, why) when its packages are missing or it cannot be built."""
    why = registry.missing(family)
    if why:
        _log(f"{family.name}: skipped, {why}")
        return None, why
    tb = time.perf_counter()
    try:
        model = registry.build(family.name, width, device)
    except Exception as err:  # a model that cannot be built here: listed, the others run
        _log(f"{family.name}: cannot build ({type(err).__name__}: {err})")
        return None, f"cannot build: {type(err).__name__}: {err}"[:300]
    _log(f"{family.name}: built in {time.perf_counter() - tb:.1f} s ({model.description})")
    return model, None


def _run_cell(model: Any, args: argparse.Namespace, configs: list, kernel: str, size: Size, share: float,
              clock: str) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of one cell; a failure of the whole cell (the baseline runs out of memory) is one row."""
    tc = time.perf_counter()
    try:
        with model.kernel(kernel):
            series = measure_cell(model, configs, size, args.repeats, args.warmup, share, clock)
        rows = make_rows(model.name, kernel, size, series)
    except Exception as err:  # e.g. the baseline runs out of memory: note it, go on
        rows = [cell_row(model.name, kernel, size, error=f"{type(err).__name__}: {err}"[:300])]
    _free_memory(model.device)
    rounds = rows[0]["rounds"]
    _log(f"  {model.name} {kernel} {size.label} ({rounds} rounds, {time.perf_counter() - tc:.1f} s): "
         + _summary(rows))  # fmt: skip
    return rows


def run_studies(args: argparse.Namespace) -> dict[str, Any]:
    """Run the named studies into one JSON (and a PNG where a study has speed-ups)."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    meta = _meta(args, device)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name in args.study_list:
        study = STUDIES[name]
        why = registry.missing(study)  # type: ignore[arg-type]  # a Study names its packages as a Family does
        if why:
            raise RuntimeError(f"study {name} {why}")
        _log(f"study {name}: {study.summary}")
        rows.extend(study.run(args, _log))
        meta["elapsed_s"] = time.perf_counter() - t0
        write_json(out, meta, rows)
    plot(rows, out.with_suffix(".png"), title(meta))
    return {**meta, "rows": rows}


def replot(paths: list[Path], datas: list[dict[str, Any]]) -> int:
    """Redraw one PNG (beside the first JSON) of the rows of results JSONs, also of earlier versions of the bench
    (e.g. sizes run apart), and print their table."""
    metas, rows = zip(*(upgrade(d) for d in datas), strict=True)
    all_rows = [r for part in rows for r in part]
    plot(all_rows, paths[0].with_suffix(".png"), title(metas[0]))
    print(markdown_table(all_rows))
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
            return replot([Path(p) for p in args.replot], args.replot_data)
        result = run_studies(args) if args.study else run(args)
    except KeyboardInterrupt:
        _log(f"{PROG}: interrupted; what was measured so far is in {args.out}")
        return 130
    except Exception as err:  # never a traceback: one line, and the partial results stay on disk
        _log(f"{PROG}: error: {type(err).__name__}: {err}")
        return 1
    print(markdown_table(result["rows"]))
    measured = [r for r in result["rows"] if r["speedup"] is not None or r["rel_change"] is not None]
    spent = f" ({result['clock_s']:.0f} s of CPU time)" if result["clock"] == "cpu-time" and "clock_s" in result else ""
    png = Path(args.out).with_suffix(".png")
    wrote = f"{args.out} and {png}" if png.exists() else args.out
    _log(f"wrote {wrote} in {result['elapsed_s']:.0f} s{spent}")
    if not measured:
        _log(f"{PROG}: error: nothing could be measured (see the table for why)")
        return 1
    return 0
