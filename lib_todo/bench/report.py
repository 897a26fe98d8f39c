"""Reporting: the markdown table, device and versions for the JSON, the JSON itself, the plot, and reading the
JSONs of earlier versions of the bench (`upgrade`)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import secrets
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .measure import ROW_FIELDS

SCHEMA = 2  # 2: one schema for every family and study (rows of measure.ROW_FIELDS), the A/A noise floor


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    """`value` formatted by `spec` plus `suffix`; "-" for None."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


TABLE_COLUMNS = ("model", "kernel", "size", "config", "ms", "speedup", "spread", "share of ideal", "peak MB",
                 "output change", "applied")  # fmt: skip


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table: ms = baseline median / speed-up; spread = lowest-highest round ratio; a
    speed-up within the cell's noise floor (the A/A row's spread around 1) says "within noise"."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        low, high = r.get("ratio_low"), r.get("ratio_high")
        speedup = _fmt(r["speedup"], ".2f", "x")
        if r.get("within_noise") and r["config"] != "baseline (A/A)":
            speedup += " (within noise)"
        cells = [
            r["model"],
            r.get("kernel") or "-",
            r["size"],
            r["config"],
            _fmt(r["ms"], ".1f"),
            speedup,
            f"{low:.2f}-{high:.2f}" if low is not None and high is not None else "-",
            _fmt(r["share_of_ideal"] and 100 * r["share_of_ideal"], ".0f", "%"),
            _fmt(r.get("peak_mb"), ".0f"),
            _fmt(r["rel_change"] and 100 * r["rel_change"], ".2f", "%"),
            _note(r) or _applied(r),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _applied(row: dict[str, Any]) -> str:
    """The applied column; on the A/A row, the cell's noise floor."""
    if row["config"] == "baseline (A/A)" and row.get("noise") is not None:
        return f"noise floor ±{100 * row['noise']:.1f}%"
    return row.get("applied") or ""


def _note(row: dict[str, Any]) -> str:
    """ "skipped: why" or "failed: error" for a row that has no numbers, else ""."""
    if row.get("skipped"):
        return f"skipped: {row['skipped']}"
    return f"failed: {row['error']}" if row.get("error") else ""


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model, core count, widest vector unit and torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name, flags = platform.processor() or platform.machine(), cpu_flags()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    vector = next((label for flag, label in VECTOR_UNITS if flag in flags), None)
    cores = f"{os.cpu_count()} cores" + (f", {vector}" if vector else "")
    return f"{name} ({cores}, {threads} torch thread{'' if threads == 1 else 's'})"


# The widest matrix/vector unit first: a CPU model name ("AMD EPYC" in a VM) may hide which one a machine has, and
# bf16 matmuls run several times slower without native bf16 (the Flux rows are bf16).
VECTOR_UNITS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_flags() -> list[str]:
    """The CPU's flags that decide matmul speed (those of VECTOR_UNITS), from /proc/cpuinfo; [] where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag, _ in VECTOR_UNITS if flag in have]
    except OSError:
        pass
    return []


def _version(dist: str) -> str | None:
    """The installed version of distribution `dist`, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Device and versions for the JSON."""
    env: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "cpu_flags": cpu_flags(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "diffusers": _version("diffusers"),
            "tomesd": _version("tomesd"),
            "stable-diffusion-sdkit": _version("stable-diffusion-sdkit"),
        },
    }
    if device.type == "cuda":
        backends = torch.backends.cuda
        env["sdp_backends"] = {
            name: getattr(backends, f"{name}_sdp_enabled")()
            for name in ("flash", "mem_efficient", "math", "cudnn")
            if hasattr(backends, f"{name}_sdp_enabled")
        }
    return env


def title(meta: dict[str, Any]) -> str:
    """The plot's title: device and clock, then what each model was (as built)."""
    head = f"{meta.get('device', '?')}, clock: {meta.get('clock', 'not recorded')}"
    models = meta.get("models") or {}
    return "\n".join([head, *models.values()])


OLD_CLOCKS = {"cpu": "cpu-time"}  # the Flux bench of schema 1 named the process's CPU time "cpu"


def upgrade(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, rows) of a results JSON of any schema: rows of schema 1 (the UNet bench before the A/A row, the Flux
    bench of `python -m lib_todo.bench.flux`) get the fields they lack (kernel "sdpa", height = width, 1 frame,
    no noise floor). The Flux bench of schema 1 showed each row's own median time as `ms`, not base / speed-up."""
    meta = {k: v for k, v in data.items() if k != "rows"}
    meta["clock"] = OLD_CLOCKS.get(meta.get("clock"), meta.get("clock")) or "not recorded"
    if not meta.get("models") and meta.get("dtype"):
        meta["models"] = {"flux": f"Flux blocks (diffusers), full width, {meta['dtype']}, batch 1 (schema 1)"}
    elif not meta.get("models") and isinstance(meta.get("args"), dict) and meta["args"].get("width"):
        meta["models"] = {"unets": f"UNets at width {meta['args']['width']}, batch 2 (schema 1)"}
    rows = []
    for r in data["rows"]:
        row = {**dict.fromkeys(ROW_FIELDS), "kernel": "sdpa", "frames": 1, "applied": "", "round_ms": [], **r}
        if row.get("height_px") is None:
            row["height_px"] = row.get("width_px")
        rows.append(row)
    return meta, rows


def write_json(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the results atomically (a run cut short leaves a readable file, and no temporary one)."""
    text = json.dumps({**meta, "rows": rows}, indent=1)
    _replace_atomically(path, lambda tmp: tmp.write_text(text))


def _replace_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` to a hidden temporary file beside `path`, then rename it over `path`; the temporary file
    is removed whatever happens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Speed-up against size per configuration, the bound drawn bold, the noise floor shaded; one panel per
    model/kernel. Nothing is drawn when no row has a speed-up (an output-change study)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["model"], r.get("kernel")) for r in rows if r.get("speedup") is not None))
    if not panels:
        return
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.2 * nrows), squeeze=False)
    for ax, (model, kernel) in zip(axes.flat, panels, strict=False):
        plot_panel(ax, [r for r in rows if r["model"] == model and r.get("kernel") == kernel])
        ax.set_title(f"{model} / {kernel}" if kernel else model)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    # Wrapped so that a long model description stays on the figure (about 70 characters per panel column).
    wrapped = "\n".join(textwrap.fill(line, 70 * cols) for line in title.splitlines())
    fig.suptitle(wrapped, fontsize=9)
    fig.tight_layout()
    _replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


UNDRAWN = ("baseline", "baseline (A/A)", "all")


def plot_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """One model/kernel panel: speed-up per configuration over the sizes, ordered by pixel count.

    Every line has markers, so a single size still shows each configuration and the bound; `-nb` rows (a DiT
    without balance) are dashed; the noise floor (1 ± the A/A spread) is a grey band.
    """
    sizes = sorted({(r.get("width_px", 0) * r.get("height_px", 0) * (r.get("frames") or 1), r["size"]) for r in rows})
    labels = [s for _, s in sizes]
    noise = {r["size"]: r["noise"] for r in rows if r.get("noise") is not None}
    if noise:
        xs = [i for i, s in enumerate(labels) if s in noise]
        lo, hi = [1.0 - noise[labels[i]] for i in xs], [1.0 + noise[labels[i]] for i in xs]
        if len(xs) == 1:
            xs, lo, hi = [xs[0] - 0.25, xs[0] + 0.25], lo * 2, hi * 2
        ax.fill_between(xs, lo, hi, color="grey", alpha=0.25, lw=0, label="noise floor (A/A)")
    ax.axhline(1.0, color="grey", lw=0.8)
    for config in dict.fromkeys(r["config"] for r in rows if r["config"] not in UNDRAWN):
        points = {r["size"]: r["speedup"] for r in rows if r["config"] == config and r.get("speedup")}
        xs = [i for i, s in enumerate(labels) if s in points]
        if not xs:
            continue
        ys = [points[labels[i]] for i in xs]
        if config == "bound":
            style = {"color": "black", "lw": 2.5, "ls": "--", "marker": "D", "ms": 7, "zorder": 3}
            what = next((r.get("applied") for r in rows if r["config"] == "bound" and r.get("applied")), "")
            label = f"bound: {what}" if what else "bound"
        else:
            style, label = {"marker": "o", "ls": "--" if config.endswith("-nb") else "-"}, config
        ax.plot(xs, ys, label=label, **style)
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    if len(labels) == 1:
        ax.set_xlim(-0.5, 0.5)
    ax.set_ylabel("speed-up vs baseline (median of round ratios)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
