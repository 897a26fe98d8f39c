"""`python -m lib_todo.bench`: run the cells, write JSON and PNG as it goes, print the table; or replot."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .kernels import attention_kernel
from .measure import _free_memory, make_rows, measure_cell
from .model import BATCH, load_model
from .options import _csv, parse_args, parse_size
from .report import environment, markdown_table, plot, write_json
from .variants import CONFIG_KINDS, make_configs


def _log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(msg, file=sys.stderr, flush=True)


def _summary(rows: list[dict[str, Any]]) -> str:
    """One line per cell for the log: baseline ms, then each speedup or failure."""
    parts = []
    for r in rows:
        if r["config"] == "baseline":
            parts.append(f"base {r['ms']:.1f} ms")
        elif r["error"]:
            parts.append(f"{r['config']} failed")
        elif r["speedup"] is not None:
            parts.append(f"{r['config']} {r['speedup']:.2f}x")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by `args`; returns what was written to the JSON."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [parse_size(s) for s in _csv(args.sizes)]
    kernels = _csv(args.kernels)
    kinds = set(CONFIG_KINDS) if args.configs == "all" else set(_csv(args.configs))
    factors = [float(f) for f in _csv(args.factors)]
    configs = make_configs(factors, kinds, importlib.util.find_spec("tomesd") is not None)
    models = _csv(args.models)
    out = Path(args.out)
    meta = {**environment(device), "args": vars(args), "timestamp": datetime.now(timezone.utc).isoformat()}
    rows: list[dict[str, Any]] = []
    cells_left = len(models) * len(kernels) * len(sizes)
    t0 = time.perf_counter()
    _log(f"bench on {meta['device']}: {cells_left} cells, {len(configs) + 1} configs each, budget {args.budget_s:g} s")
    for name in models:
        tb = time.perf_counter()
        try:
            model = load_model(name, args.width, device)
        except Exception as err:  # a missing package or an unknown name: note it, run the other models
            _log(f"{name}: cannot build ({type(err).__name__}: {err})")
            rows.extend(_failed_row(name, k, size, err) for k in kernels for size in sizes)
            cells_left -= len(kernels) * len(sizes)
            continue
        _log(f"{name}: built in {time.perf_counter() - tb:.1f} s, {len(model.level1)} level-1 blocks")
        for kernel in kernels:
            with attention_kernel(model.unet, model.family, kernel):
                for size in sizes:
                    share = max(0.0, args.budget_s - (time.perf_counter() - t0)) / cells_left
                    tc = time.perf_counter()
                    try:
                        series = measure_cell(model, configs, size, args.repeats, args.warmup, share)
                        cell_rows = make_rows(model, kernel, size, series)
                    except Exception as err:  # e.g. the baseline runs out of memory: note it, go on
                        cell_rows = [_failed_row(name, kernel, size, err)]
                    _free_memory(device)
                    cells_left -= 1
                    rows.extend(cell_rows)
                    meta["elapsed_s"] = time.perf_counter() - t0
                    write_json(out, meta, rows)
                    rounds = cell_rows[0].get("rounds", 0)
                    _log(
                        f"  {name} {kernel} {size[0]}x{size[1]} ({rounds} rounds, {time.perf_counter() - tc:.1f} s): "
                        + _summary(cell_rows)
                    )
        del model
        _free_memory(device)
        plot(rows, out.with_suffix(".png"), f"{meta['device']}, width {args.width}, batch {BATCH}")
    meta["elapsed_s"] = time.perf_counter() - t0
    write_json(out, meta, rows)
    plot(rows, out.with_suffix(".png"), f"{meta['device']}, width {args.width}, batch {BATCH}")
    return {**meta, "rows": rows}


def _failed_row(model: str, kernel: str, size: tuple[int, int], err: Exception) -> dict[str, Any]:
    """A baseline row with no numbers and the error, for a model or cell that could not run."""
    row: dict[str, Any] = dict.fromkeys(
        ("ms", "base_ms", "speedup", "ideal_ms", "share_of_ideal", "peak_mb", "rel_change"), None
    )
    row.update(model=model, kernel=kernel, size=f"{size[0]}x{size[1]}", width_px=size[0], height_px=size[1])
    row.update(config="baseline", applied="", rounds=0, error=f"{type(err).__name__}: {err}"[:300])
    return row


def replot(path: Path) -> int:
    """Redraw the PNG next to a results JSON (e.g. of a run cut short) and print its table."""
    data = json.loads(path.read_text())
    plot(data["rows"], path.with_suffix(".png"), f"{data['device']}, width {data['args']['width']}, batch {BATCH}")
    print(markdown_table(data["rows"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print the markdown table, say where the files are."""
    args = parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))
    result = run(args)
    print(markdown_table(result["rows"]))
    _log(f"wrote {args.out} and {Path(args.out).with_suffix('.png')} in {result['elapsed_s']:.0f} s")
    return 0
