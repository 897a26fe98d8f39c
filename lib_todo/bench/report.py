"""Reporting: the markdown table, device and versions for the JSON, the JSON itself, the plot."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    """`value` formatted by `spec` plus `suffix`; "-" for None."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table: ms = baseline median / speed-up; spread = lowest-highest round ratio."""
    names = ("model", "kernel", "size", "config", "ms", "speedup", "spread", "share of ideal", "peak MB")
    head = "| " + " | ".join((*names, "output change", "applied")) + " |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        low, high = r.get("ratio_low"), r.get("ratio_high")
        note = _note(r)
        cells = [
            r["model"],
            r["kernel"],
            r["size"],
            r["config"],
            _fmt(r["ms"], ".1f"),
            _fmt(r["speedup"], ".2f", "x"),
            f"{low:.2f}-{high:.2f}" if low is not None and high is not None else "-",
            _fmt(r["share_of_ideal"] and 100 * r["share_of_ideal"], ".0f", "%"),
            _fmt(r["peak_mb"], ".0f"),
            _fmt(r["rel_change"], ".3f"),
            note or r["applied"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _note(row: dict[str, Any]) -> str:
    """ "skipped: why" or "failed: error" for a row that has no numbers, else ""."""
    if row.get("skipped"):
        return f"skipped: {row['skipped']}"
    return f"failed: {row['error']}" if row.get("error") else ""


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{name} ({os.cpu_count()} cores, {threads} torch thread{'' if threads == 1 else 's'})"


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
    """Speed-up against size per configuration, the bound drawn bold, one panel per model/kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["model"], r["kernel"]) for r in rows if r["speedup"] is not None))
    if not panels:
        return
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.2 * nrows), squeeze=False)
    for ax, (model, kernel) in zip(axes.flat, panels, strict=False):
        plot_panel(ax, [r for r in rows if r["model"] == model and r["kernel"] == kernel])
        ax.set_title(f"{model} / {kernel}")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """One model/kernel panel: speed-up per configuration over the sizes, ordered by pixel count.

    Every line has markers, so a single size still shows each configuration and the bound.
    """
    sizes = sorted({(r["width_px"] * r["height_px"], r["size"]) for r in rows})
    labels = [s for _, s in sizes]
    ax.axhline(1.0, color="grey", lw=0.8)
    for config in dict.fromkeys(r["config"] for r in rows if r["config"] not in ("baseline", "all")):
        points = {r["size"]: r["speedup"] for r in rows if r["config"] == config and r["speedup"]}
        xs = [i for i, s in enumerate(labels) if s in points]
        if not xs:
            continue
        ys = [points[labels[i]] for i in xs]
        if config == "bound":
            style = {"color": "black", "lw": 2.5, "ls": "--", "marker": "D", "ms": 7, "zorder": 3}
            label = "bound (L1 self-attn free)"
        else:
            style, label = {"marker": "o"}, config
        ax.plot(xs, ys, label=label, **style)
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    if len(labels) == 1:
        ax.set_xlim(-0.5, 0.5)
    ax.set_ylabel("speed-up vs baseline (median of round ratios)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
