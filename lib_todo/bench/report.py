"""Reporting: the markdown table, device and versions for the JSON, the JSON itself, the plot."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    """`value` formatted by `spec` plus `suffix`; "-" for None."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    head = (
        "| model | kernel | size | config | ms | speedup | ideal ms | share of ideal | peak MB | rel change | applied |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        cells = [
            r["model"],
            r["kernel"],
            r["size"],
            r["config"],
            _fmt(r["ms"], ".1f"),
            _fmt(r["speedup"], ".2f", "x"),
            _fmt(r["ideal_ms"], ".1f"),
            _fmt(r["share_of_ideal"] and 100 * r["share_of_ideal"], ".0f", "%"),
            _fmt(r["peak_mb"], ".0f"),
            _fmt(r["rel_change"], ".3f"),
            r["error"] or r["applied"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


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
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


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
    """Write the results (atomically, so a run cut short leaves a readable file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, "rows": rows}, indent=1))
    tmp.replace(path)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Speedup against resolution per configuration, the bound drawn bold, one panel per model/kernel."""
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
        _plot_panel(ax, [r for r in rows if r["model"] == model and r["kernel"] == kernel])
        ax.set_title(f"{model} / {kernel}")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    """One model/kernel panel: speedup per configuration over the sizes, ordered by pixel count."""
    sizes = sorted({(r["width_px"] * r["height_px"], r["size"]) for r in rows})
    labels = [s for _, s in sizes]
    ax.axhline(1.0, color="grey", lw=0.8)
    for config in dict.fromkeys(r["config"] for r in rows if r["config"] != "baseline"):
        points = {r["size"]: r["speedup"] for r in rows if r["config"] == config and r["speedup"]}
        xs = [i for i, s in enumerate(labels) if s in points]
        ys = [points[labels[i]] for i in xs]
        style = {"color": "black", "lw": 2.5, "ls": "--"} if config == "bound" else {"marker": "o"}
        ax.plot(xs, ys, label="bound (L1 self-attn free)" if config == "bound" else config, **style)
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_ylabel("speedup vs baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
