"""Round-robin timing of one cell (model, kernel, size) and its table rows.

Every round calls the baseline and then each configuration once, so each speedup is the median of ratios
taken within one round (drift cancels).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from .model import Model
from .variants import BASELINE, TOME_RATIO, Config


def timed_call(model: Model, args: tuple, kwargs: dict[str, Any]) -> tuple[float, float | None, torch.Tensor]:
    """(ms, peak MB or None, output) of one UNet call; CUDA events and synchronisation on CUDA."""
    if model.device.type != "cuda":
        start = time.perf_counter()
        out = model.call(args, kwargs)
        return (time.perf_counter() - start) * 1000.0, None, out
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
    """What one configuration measured in one cell."""

    config: Config
    ms: list[float]
    ratios: list[float]
    peak_mb: float | None = None
    rel: float | None = None
    applied: str = ""
    level1_factor: float = 1.0
    error: str | None = None


def _note_peak(series: Series, peak: float | None) -> None:
    """Keep the largest peak seen (CUDA only; `peak` is None on CPU)."""
    if peak is not None:
        series.peak_mb = max(series.peak_mb or 0.0, peak)


def _warm(model: Model, series: list[Series], args: tuple, kwargs: dict[str, Any]) -> None:
    """A first round: warms kernels, records times, output change and applied factors; drops what fails."""
    base_ms, peak, base = timed_call(model, args, kwargs)
    series[0].ms.append(base_ms)
    _note_peak(series[0], peak)
    for s in series[1:]:
        try:
            with model.configured(s.config) as handle:
                ms, peak, out = timed_call(model, args, kwargs)
            s.ms.append(ms)
            s.ratios.append(base_ms / ms)
            _note_peak(s, peak)
            s.rel = rel_change(out, base)
            del out
            if handle is not None:
                applied = handle.applied
                s.applied = "/".join(f"{applied.get(level, 1.0):g}x" for level in (1, 2))
                s.level1_factor = applied.get(1, 1.0)
            elif s.config.kind == "tome":
                s.applied = f"tome r{TOME_RATIO:g} /{model.level1_ds}"
            elif s.config.kind == "bound":
                s.applied = f"L1 attn1 free ({len(model.level1)})"
        except Exception as err:  # one failing configuration (OOM, an incompatible tomesd) must not end the run
            s.error = f"{type(err).__name__}: {err}"[:300]
            s.ms.clear()
            s.ratios.clear()
            _free_memory(model.device)
    series[0].rel = 0.0


def _round(model: Model, series: list[Series], args: tuple, kwargs: dict[str, Any], shift: int) -> None:
    """One baseline call, then each live configuration once (order rotated by `shift`)."""
    base_ms, peak, out = timed_call(model, args, kwargs)
    del out
    series[0].ms.append(base_ms)
    _note_peak(series[0], peak)
    live = [s for s in series[1:] if s.error is None]
    if live:
        shift %= len(live)
        live = live[shift:] + live[:shift]
    for s in live:
        with model.configured(s.config):
            ms, peak, out = timed_call(model, args, kwargs)
        del out
        s.ms.append(ms)
        s.ratios.append(base_ms / ms)
        _note_peak(s, peak)


def measure_cell(
    model: Model, configs: list[Config], size: tuple[int, int], repeats: int, warmup: int, budget_s: float
) -> list[Series]:
    """`warmup` rounds, then timed rounds until `repeats`, or until `budget_s` is spent after at least 3.

    The first round also records output change and applied factors; with `warmup` 0 it is a timed round.
    """
    series = [Series(BASELINE, [], [])] + [Series(c, [], []) for c in configs]
    args, kwargs = model.inputs(*size)
    min_rounds = min(3, repeats)
    start = time.perf_counter()
    with model.context():
        _warm(model, series, args, kwargs)
        for _ in range(warmup - 1):
            _round(model, series, args, kwargs, 0)
        if warmup > 0:
            for s in series:
                s.ms.clear()
                s.ratios.clear()
        while len(series[0].ms) < repeats:
            done = len(series[0].ms)
            if done >= min_rounds and time.perf_counter() - start >= budget_s:
                break
            _round(model, series, args, kwargs, done + 1)
    return series


def _free_memory(device: torch.device) -> None:
    """Drop garbage and, on CUDA, the cached allocator blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_rows(model: Model, kernel: str, size: tuple[int, int], series: list[Series]) -> list[dict[str, Any]]:
    """Table rows of one cell; speedup is the median of within-round ratios."""
    base_ms = statistics.median(series[0].ms)
    bound = next((s for s in series if s.config.kind == "bound" and s.ms), None)
    bound_ms = statistics.median(bound.ms) if bound else None
    rows = []
    for s in series:
        ms = statistics.median(s.ms) if s.ms else None
        speedup = 1.0 if s.config.kind == "baseline" else (statistics.median(s.ratios) if s.ratios else None)
        ideal = None
        if bound_ms is not None and s.config.has_ideal and ms:
            f = s.level1_factor
            ideal = base_ms - (1.0 - 1.0 / f**2) * (base_ms - bound_ms)
        rows.append(
            {
                "model": model.name,
                "kernel": kernel,
                "size": f"{size[0]}x{size[1]}",
                "width_px": size[0],
                "height_px": size[1],
                "config": s.config.name,
                "ms": ms,
                "base_ms": base_ms,
                "speedup": speedup,
                "ideal_ms": ideal,
                "share_of_ideal": ideal / ms if ideal and ms else None,
                "peak_mb": s.peak_mb,
                "rel_change": s.rel,
                "applied": s.applied,
                "rounds": len(s.ms),
                "error": s.error,
            }
        )
    return rows
