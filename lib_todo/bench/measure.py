"""The one timing loop of the bench: round-robin timing of one cell (model, kernel, size) and its rows.

Every round calls the baseline, the A/A row (the baseline again) and each configuration once, in an order
rotated from round to round. One estimator gives every figure: a configuration's speed-up is the median over
rounds of the ratio (baseline time / its time) within the round, so drift and load between rounds cancel; its
`ms` is the baseline's median time divided by that speed-up, so times and speed-ups always agree; its spread is
the lowest and highest of those ratios.

Noise floor: the A/A row's ratios would all be 1 on a quiet machine; `noise` is their largest distance from 1.
A speed-up within `1 ± noise` is marked `within_noise`: this run cannot tell it from no change.

Ideal time of a configuration that keeps the share `kept` of the keys/values on the bound's attention
(`Applied.kept`, given by the family): `base - (1 - kept) * (base - bound)`.

The clock (`CLOCKS`): CUDA events on CUDA; on a CPU running one torch thread, the CPU time of the process (equal
to the wall time on an idle machine, and blind to the time other processes hold the cores); else wall time.
`--clock cpu-time` asks for CPU time with more threads too (then run with OMP_WAIT_POLICY=PASSIVE, so that
waiting threads do not spin).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .family import AA, BASELINE, BenchModel, Config, Size

CLOCKS = {
    "cuda-events": "CUDA events around each call",
    "cpu-time": "CPU time of the process",
    "wall": "wall time",
}


def clock_for(device: torch.device, asked: str = "auto") -> str:
    """The clock the bench uses on `device` (a key of CLOCKS): `asked` on a CPU unless "auto"; "auto" is CPU time
    with one torch thread, else wall time. CUDA: CUDA events."""
    if device.type == "cuda":
        return "cuda-events"
    if asked != "auto":
        return asked
    return "cpu-time" if torch.get_num_threads() == 1 else "wall"


def clock_seconds(clock: str) -> float:
    """Now, in seconds, by `clock` (the budget is counted in it, so a busy machine runs the same rounds as an
    idle one); CUDA counts wall time."""
    return time.process_time() if clock == "cpu-time" else time.perf_counter()


def timed_call(
    model: BenchModel, args: tuple, kwargs: dict[str, Any], clock: str
) -> tuple[float, float | None, torch.Tensor]:
    """(ms, peak MB or None, output) of one call, by `clock`."""
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
    kept: float | None = None  # share of the bound's keys/values kept (for the ideal time), if defined
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


def _first_round(model: BenchModel, series: list[Series], args: tuple, kwargs: dict[str, Any], clock: str) -> None:
    """Warms kernels, records times, output change and what each configuration did; marks what fails."""
    base_ms, peak, base = timed_call(model, args, kwargs, clock)
    series[0].note(base_ms, peak, None)
    series[0].rel = 0.0
    for s in _timing_order(series)[1:]:
        if not s.live:
            continue
        try:
            with model.configured(s.config) as handle:
                ms, peak, out = timed_call(model, args, kwargs, clock)
            s.note(ms, peak, base_ms)
            s.rel = rel_change(out, base)
            del out
            s.applied, s.kept = model.applied(s.config, handle)
            if s.config.kind == "aa":
                s.applied = "the baseline again: its spread is the noise floor"
        except Exception as err:  # one failing configuration (OOM, an incompatible tomesd) must not end the run
            s.error = f"{type(err).__name__}: {err}"[:300]
            s.ms.clear()
            s.ratios.clear()
            _free_memory(model.device)


def _round(
    model: BenchModel, series: list[Series], args: tuple, kwargs: dict[str, Any], shift: int, clock: str
) -> None:
    """The baseline and each live configuration once, in an order rotated by `shift` (the baseline too, so no
    configuration always runs right after another)."""
    order = [s for s in _timing_order(series) if s.live]
    shift %= len(order)
    order = order[shift:] + order[:shift]
    times: dict[int, tuple[float, float | None]] = {}
    for s in order:
        try:
            with model.configured(s.config):
                ms, peak, out = timed_call(model, args, kwargs, clock)
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


def _timing_order(series: list[Series]) -> list[Series]:
    """The order of one round before rotation: the A/A row moves from beside the baseline (where it would always
    run right after the same computation, warmer than any configuration) to the middle of the configurations."""
    rest = [s for s in series if s.config.kind != "aa"]
    aa = [s for s in series if s.config.kind == "aa"]
    middle = 1 + (len(rest) - 1) // 2
    return rest[:middle] + aa + rest[middle:]


def measure_cell(
    model: BenchModel,
    configs: list[Config],
    size: Size | tuple[int, ...],
    repeats: int,
    warmup: int,
    budget_s: float,
    clock: str | None = None,
) -> list[Series]:
    """`warmup` untimed rounds, then timed rounds until `repeats`, or until `budget_s` is spent after 3.

    Series (in table order): the baseline, the A/A row, then `configs`; a round runs them rotated from
    `_timing_order`. The first round also records output change and what each configuration did; with `warmup` 0
    it is a timed round. `clock`: a key of CLOCKS (default: `clock_for`).
    """
    clock = clock or clock_for(model.device)
    series = [Series(BASELINE), Series(AA)] + [Series(c, skipped=model.cannot_run(c)) for c in configs]
    args, kwargs = model.inputs(Size(*size))
    min_rounds = min(3, repeats)
    start = clock_seconds(clock)
    with model.context():
        _first_round(model, series, args, kwargs, clock)
        for i in range(warmup - 1):
            _round(model, series, args, kwargs, i + 1, clock)
        if warmup > 0:
            for s in series:
                s.ms.clear()
                s.ratios.clear()
        while len(series[0].ms) < repeats:
            done = len(series[0].ms)
            if done >= min_rounds and clock_seconds(clock) - start >= budget_s:
                break
            _round(model, series, args, kwargs, done + 1, clock)
    return series


def _free_memory(device: torch.device) -> None:
    """Drop garbage and, on CUDA, the cached allocator blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cell_row(model: str, kernel: str, size: Size | tuple[int, ...], *, error: str | None = None,
             skipped: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The one row of a cell that could not run at all (config "all"), with the error or the reason."""
    return row(model, kernel, size, "all", error=error, skipped=skipped)


def row(model: str, kernel: str, size: Size | tuple[int, ...], config: str, **values: Any) -> dict[str, Any]:
    """A row of the one JSON schema (ROW_FIELDS); fields not in `values` are None. Studies write theirs with it."""
    size = Size(*size)
    out: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    out.update(model=model, kernel=kernel, size=size.label, width_px=size.width, height_px=size.height)
    out.update(frames=size.frames, config=config, applied="", rounds=0, round_ms=[])
    out.update(values)
    return out


ROW_FIELDS = (
    "model",
    "kernel",
    "size",
    "width_px",
    "height_px",
    "frames",
    "config",
    "ms",
    "base_ms",
    "speedup",
    "ratio_low",
    "ratio_high",
    "noise",
    "within_noise",
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


def noise_floor(aa: Series) -> float | None:
    """The A/A row's largest distance from 1 over its round ratios (0.03: the baseline timed against itself
    moved by up to 3%), or None without a timed round."""
    return max(abs(r - 1.0) for r in aa.ratios) if aa.ratios else None


def make_rows(model: str, kernel: str, size: Size | tuple[int, ...], series: list[Series]) -> list[dict[str, Any]]:
    """Table rows of one cell: speed-up = median of within-round ratios; ms = baseline median / speed-up.

    ratio_low/high: the smallest and largest within-round ratio (the spread behind the median).
    noise: the cell's noise floor (`noise_floor` of the A/A row), on every row; within_noise: the speed-up lies
    within 1 ± noise. ideal_ms: `base - (1 - kept) * (base - bound)`, with bound = base / its speed-up.
    """
    base_ms = statistics.median(series[0].ms)
    bound = next((s for s in series if s.config.kind == "bound" and s.ratios), None)
    bound_ms = base_ms / statistics.median(bound.ratios) if bound else None
    aa = next((s for s in series if s.config.kind == "aa"), None)
    noise = noise_floor(aa) if aa is not None else None
    rows = []
    for s in series:
        values: dict[str, Any] = {
            "base_ms": base_ms,
            "noise": noise,
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
            if noise is not None:
                values.update(within_noise=abs(speedup - 1.0) <= noise)
            if bound_ms is not None and s.config.has_ideal and s.kept is not None:
                ideal = base_ms - (1.0 - s.kept) * (base_ms - bound_ms)
                values.update(ideal_ms=ideal, share_of_ideal=ideal / values["ms"])
        rows.append(row(model, kernel, size, s.config.name, **values))
    return rows
