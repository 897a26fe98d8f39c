"""Round-robin timing of one cell (model, kernel, size) and its table rows.

Every round calls the baseline and each configuration once, in an order rotated from round to round.
One estimator gives both columns: a configuration's speed-up is the median over rounds of the ratio
(baseline time / its time) within the round, so drift and load between rounds cancel; its `ms` is the
baseline's median time divided by that speed-up, so times and speed-ups always agree.

The clock: CUDA events on CUDA; on a CPU running one torch thread, the CPU time of the process (equal to the
wall time on an idle machine, and blind to the time other processes hold the cores); else wall time.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .registry import BenchModel
from .variants import BASELINE, Config

CLOCKS = {
    "cuda-events": "CUDA events around each call",
    "cpu-time": "CPU time of the process (one torch thread)",
    "wall": "wall time",
}


def clock_for(device: torch.device) -> str:
    """The clock the bench uses on `device` (a key of CLOCKS), given the current torch thread count."""
    if device.type == "cuda":
        return "cuda-events"
    return "cpu-time" if torch.get_num_threads() == 1 else "wall"


def clock_seconds(device: torch.device) -> float:
    """Now, in seconds, by the bench's clock on `device` (the budget is counted in it, so a busy machine runs
    the same rounds as an idle one); CUDA counts wall time."""
    return time.process_time() if clock_for(device) == "cpu-time" else time.perf_counter()


def timed_call(model: BenchModel, args: tuple, kwargs: dict[str, Any]) -> tuple[float, float | None, torch.Tensor]:
    """(ms, peak MB or None, output) of one call, by the clock of `clock_for(model.device)`."""
    clock = clock_for(model.device)
    if clock != "cuda-events":
        now = time.process_time if clock == "cpu-time" else time.perf_counter
        start = now()
        out = model.call(args, kwargs)
        return (now() - start) * 1000.0, None, out
    torch.cuda.synchronize(model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    out = model.call(args, kwargs)
    end.record()
    end.synchronize()
    peak = torch.cuda.max_memory_allocated(model.device) / 2**20
    return begin.elapsed_time(end), peak, out


def rel_change(out: torch.Tensor, base: torch.Tensor) -> float:
    """||out - base|| / ||base||, in fp32."""
    base32 = base.float()
    return float((out.float() - base32).norm() / base32.norm().clamp_min(1e-12))


@dataclass
class Series:
    """What one configuration measured in one cell: its time and its ratio to the baseline, per round."""

    config: Config
    ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    rel: float | None = None
    applied: str = ""
    level1_factor: float = 1.0
    error: str | None = None  # it was tried and failed
    skipped: str | None = None  # it cannot run here, and why

    @property
    def live(self) -> bool:
        return self.error is None and self.skipped is None

    def note(self, ms: float, peak: float | None, base_ms: float | None) -> None:
        """Record one timed call; `base_ms` is the baseline's time in the same round (None for the baseline)."""
        self.ms.append(ms)
        if base_ms is not None:
            self.ratios.append(base_ms / ms)
        if peak is not None:
            self.peak_mb = max(self.peak_mb or 0.0, peak)


def _first_round(model: BenchModel, series: list[Series], args: tuple, kwargs: dict[str, Any]) -> None:
    """Warms kernels, records times, output change and what each configuration did; marks what fails."""
    base_ms, peak, base = timed_call(model, args, kwargs)
    series[0].note(base_ms, peak, None)
    series[0].rel = 0.0
    for s in series[1:]:
        if not s.live:
            continue
        try:
            with model.configured(s.config) as handle:
                ms, peak, out = timed_call(model, args, kwargs)
            s.note(ms, peak, base_ms)
            s.rel = rel_change(out, base)
            del out
            s.applied, s.level1_factor = model.applied(s.config, handle)
        except Exception as err:  # one failing configuration (OOM, an incompatible tomesd) must not end the run
            s.error = f"{type(err).__name__}: {err}"[:300]
            s.ms.clear()
            s.ratios.clear()
            _free_memory(model.device)


def _round(model: BenchModel, series: list[Series], args: tuple, kwargs: dict[str, Any], shift: int) -> None:
    """The baseline and each live configuration once, in an order rotated by `shift` (the baseline too, so no
    configuration always runs right after another)."""
    order = [s for s in series if s.live]
    shift %= len(order)
    order = order[shift:] + order[:shift]
    times: dict[int, tuple[float, float | None]] = {}
    for s in order:
        try:
            with model.configured(s.config):
                ms, peak, out = timed_call(model, args, kwargs)
            del out
            times[id(s)] = (ms, peak)
        except Exception as err:  # a configuration failing in a later round (OOM): marked, the others go on
            if s is series[0]:
                raise
            s.error = f"{type(err).__name__} in a later round: {err}"[:300]
            s.ms.clear()
            s.ratios.clear()
            _free_memory(model.device)
    base_ms = times[id(series[0])][0]
    for s in order:
        if id(s) in times:
            ms, peak = times[id(s)]
            s.note(ms, peak, None if s is series[0] else base_ms)


def measure_cell(
    model: BenchModel, configs: list[Config], size: tuple[int, int], repeats: int, warmup: int, budget_s: float
) -> list[Series]:
    """`warmup` untimed rounds, then timed rounds until `repeats`, or until `budget_s` is spent after 3.

    The first round also records output change and applied factors; with `warmup` 0 it is a timed round.
    """
    series = [Series(BASELINE)] + [Series(c, skipped=model.cannot_run(c)) for c in configs]
    args, kwargs = model.inputs(*size)
    min_rounds = min(3, repeats)
    start = clock_seconds(model.device)
    with model.context():
        _first_round(model, series, args, kwargs)
        for i in range(warmup - 1):
            _round(model, series, args, kwargs, i + 1)
        if warmup > 0:
            for s in series:
                s.ms.clear()
                s.ratios.clear()
        while len(series[0].ms) < repeats:
            done = len(series[0].ms)
            if done >= min_rounds and clock_seconds(model.device) - start >= budget_s:
                break
            _round(model, series, args, kwargs, done + 1)
    return series


def _free_memory(device: torch.device) -> None:
    """Drop garbage and, on CUDA, the cached allocator blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cell_row(model: str, kernel: str, size: tuple[int, int], *, error: str | None = None, skipped: str | None = None):
    """The one row of a cell that could not run at all (config "all"), with the error or the reason."""
    return _row(model, kernel, size, "all", error=error, skipped=skipped)


def _row(model: str, kernel: str, size: tuple[int, int], config: str, **values: Any) -> dict[str, Any]:
    """A table row; fields not in `values` are None."""
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(model=model, kernel=kernel, size=f"{size[0]}x{size[1]}", width_px=size[0], height_px=size[1])
    row.update(config=config, applied="", rounds=0, round_ms=[])
    row.update(values)
    return row


ROW_FIELDS = (
    "model",
    "kernel",
    "size",
    "width_px",
    "height_px",
    "config",
    "ms",
    "base_ms",
    "speedup",
    "ratio_low",
    "ratio_high",
    "ideal_ms",
    "share_of_ideal",
    "peak_mb",
    "rel_change",
    "applied",
    "rounds",
    "round_ms",
    "error",
    "skipped",
)


def make_rows(model: str, kernel: str, size: tuple[int, int], series: list[Series]) -> list[dict[str, Any]]:
    """Table rows of one cell: speed-up = median of within-round ratios; ms = baseline median / speed-up.

    ratio_low/high: the smallest and largest within-round ratio (the spread behind the median).
    ideal_ms: for a level-1 factor f, `base - (1 - 1/f^2) * (base - bound)`, with bound = base / its speed-up.
    """
    base_ms = statistics.median(series[0].ms)
    bound = next((s for s in series if s.config.kind == "bound" and s.ratios), None)
    bound_ms = base_ms / statistics.median(bound.ratios) if bound else None
    rows = []
    for s in series:
        values: dict[str, Any] = {
            "base_ms": base_ms,
            "peak_mb": s.peak_mb,
            "rel_change": s.rel,
            "applied": s.applied,
            "rounds": len(s.ms),
            "round_ms": [round(t, 3) for t in s.ms],
            "error": s.error,
            "skipped": s.skipped,
        }
        if s.config.kind == "baseline":
            values.update(ms=base_ms, speedup=1.0)
        elif s.ratios:
            speedup = statistics.median(s.ratios)
            values.update(ms=base_ms / speedup, speedup=speedup, ratio_low=min(s.ratios), ratio_high=max(s.ratios))
            if bound_ms is not None and s.config.has_ideal:
                f = s.level1_factor
                ideal = base_ms - (1.0 - 1.0 / f**2) * (base_ms - bound_ms)
                values.update(ideal_ms=ideal, share_of_ideal=ideal / values["ms"])
        rows.append(_row(model, kernel, size, s.config.name, **values))
    return rows
