"""Benchmark of one UNet call with ToDo, its Amdahl bound, and tomesd: `python -m lib_todo.bench`.

For each model, attention kernel and size, one UNet call (batch 2 = cond + uncond, 77 text tokens; fp16 on
CUDA, fp32 on CPU) is timed for these configurations:

- `baseline`: the UNet as built.
- `bound`: the level-1 `attn1` modules (the highest-resolution self-attention) are swapped for a module that
  returns zeros: the ceiling of any key/value reduction on that level.
- `auto`: ToDo with automatic factors (`lib_todo.auto_factors`).
- `f{F}`: ToDo at factor F on level 1 only.
- `f{F}+l2`: ToDo at factor F on level 1 and the same factor F on level 2 (as the H100 anchors'
  `todo_dF+l2dF`, so the numbers compare; SDXL keeps most self-attention on level 2).
- `tome`: tomesd 0.5 on the same level as the bound (max_downsample 1 on SD1.5, 2 on SDXL), when importable.

Timing is round-robin: every round calls the baseline and then each configuration once, so each speedup
is the median of ratios taken within one round (drift cancels). Ideal time for a level-1 factor f:
`base - (1 - 1/f^2) * (base - bound)`; `auto` uses its applied level-1 factor, so where auto also acts on
level 2 its share of ideal may exceed 100%. `+l2` rows have no ideal (the bound covers level 1 only).

Kernels: `sdpa` (torch scaled_dot_product_attention: diffusers' default processor; a small SDPA forward
for ldm) and `chunked` (Doggettx-style memory-saving attention in plain torch: queries split so that one
score chunk stays under `CHUNK_BYTES`). The kernel code below is benchmark support, not part of ToDo.

Defaults come from a profile (explicit options win):
- CUDA: sd15, sdxl, ldm-sd15 (when `ldm` imports) at 512, 1024, 1536, 2048, 1000x744, factors 2,3,4, both
  kernels, 10 rounds (at least 3 once a cell's share of `--budget-s` 330 is spent), 1 warm-up round:
  `python -m lib_todo.bench --device cuda --out results/h100/bench.json` takes about 6 minutes on an H100.
- CPU: sd15 at width 64, 256 and 512 px, factors 2,4, sdpa, 3 rounds, 1 torch thread (2 threads on a shared
  2-core box time 2-4x slower and far noisier), the first round timed: about 1 minute on 2 idle cores.
  Narrow widths keep attention's share high, so CPU ratios exceed what the real width gets on a GPU.
- `--quick` (the tests): width 32, 128 and 256 px, otherwise as CPU: about 15 s.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import unets
from .grid import level_grid
from .layout import layout_of
from .patch import apply as todo_apply
from .settings import TodoSettings

CHUNK_BYTES = 2 << 30  # largest score chunk of the chunked kernel (as the H100 anchors)
BATCH = 2
TOKENS = 77
TOME_RATIO = 0.5
PROBE_PX = 256
KERNELS = ("sdpa", "chunked")
CONFIG_KINDS = ("bound", "auto", "f", "f+l2", "tome")

# Defaults per profile; explicit command-line values win.
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {
        "models": "sd15,sdxl,ldm-sd15",
        "sizes": "512,1024,1536,2048,1000x744",
        "factors": "2,3,4",
        "kernels": "sdpa,chunked",
        "repeats": 10,
        "warmup": 1,
        "width": 320,
        "threads": 0,
        "budget_s": 330.0,
    },
    "cpu": {
        "models": "sd15",
        "sizes": "256,512",
        "factors": "2,4",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 0,
        "width": 64,
        "threads": 1,
        "budget_s": 120.0,
    },
    "quick": {
        "models": "sd15",
        "sizes": "128,256",
        "factors": "2",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 0,
        "width": 32,
        "threads": 1,
        "budget_s": 30.0,
    },
}


# ----------------------------------------------------------------------------------------------------------
# Attention kernels


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D), a view."""
    b, n, c = t.shape
    return t.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, limit: int = CHUNK_BYTES) -> torch.Tensor:
    """Softmax attention over (B, H, N, D) in query chunks whose score tensor stays under `limit` bytes."""
    b, h, n, d = q.shape
    m = k.shape[2]
    rows = max(1, min(n, limit // (b * h * m * q.element_size())))
    kt = k.transpose(-1, -2)
    out = torch.empty(b, h, n, v.shape[-1], dtype=q.dtype, device=q.device)
    for i in range(0, n, rows):
        scores = torch.matmul(q[:, :, i : i + rows] * d**-0.5, kt)
        out[:, :, i : i + rows] = torch.matmul(scores.softmax(dim=-1, dtype=q.dtype), v)
        del scores
    return out


def _ldm_project(attn: nn.Module, x: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
    context = x if context is None else context
    return [split_heads(t, attn.heads) for t in (attn.to_q(x), attn.to_k(context), attn.to_v(context))]


def _ldm_sdpa_forward(self: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None, mask: Any = None):
    if mask is not None:
        raise NotImplementedError("bench kernels take no mask")
    q, k, v = _ldm_project(self, x, context)
    return self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))


def _ldm_chunked_forward(self: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None, mask: Any = None):
    if mask is not None:
        raise NotImplementedError("bench kernels take no mask")
    q, k, v = _ldm_project(self, x, context)
    return self.to_out(merge_heads(chunked_attention(q, k, v)))


LDM_FORWARDS = {"sdpa": _ldm_sdpa_forward, "chunked": _ldm_chunked_forward}


class ChunkedAttnProcessor:
    """diffusers attention processor with the chunked kernel; k/v come from `encoder_hidden_states` when
    given, which is how ToDo's hook hands `attn1` its downsampled context."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        unusual = (attn.group_norm, attn.spatial_norm, attn.norm_q, attn.norm_k, attention_mask)
        if hidden_states.ndim != 3 or any(x is not None for x in unusual):
            raise NotImplementedError("ChunkedAttnProcessor covers the plain attention of SD UNets only")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = (
            split_heads(t, attn.heads) for t in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        )
        out = attn.to_out[1](attn.to_out[0](merge_heads(chunked_attention(q, k, v))))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def transformer_blocks(unet: nn.Module) -> list[nn.Module]:
    """Every BasicTransformerBlock (ldm, sgm and diffusers share the name)."""
    return [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]


@contextmanager
def attention_kernel(unet: nn.Module, family: str, kernel: str) -> Iterator[None]:
    """Run `unet` with attention kernel `kernel` ("sdpa" or "chunked"); the original is restored after."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    if family == "ldm":
        classes = {type(getattr(b, name)) for b in transformer_blocks(unet) for name in ("attn1", "attn2")}
        saved = {cls: cls.__dict__["forward"] for cls in classes}
        try:
            for cls in classes:
                cls.forward = LDM_FORWARDS[kernel]
            yield
        finally:
            for cls, forward in saved.items():
                cls.forward = forward
        return
    if kernel == "sdpa":  # diffusers' default processor is SDPA (AttnProcessor2_0)
        yield
        return
    saved_processors = unet.attn_processors
    unet.set_attn_processor(ChunkedAttnProcessor())
    try:
        yield
    finally:
        unet.set_attn_processor(saved_processors)


# ----------------------------------------------------------------------------------------------------------
# Configurations


class ZeroAttention(nn.Module):
    """Stands in for an `attn1`: its output is zeros and nothing is computed."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(x)


@contextmanager
def level1_free(blocks: list[nn.Module]) -> Iterator[None]:
    """Swap the `attn1` of `blocks` for ZeroAttention; restore after."""
    saved = [b.attn1 for b in blocks]
    try:
        for b in blocks:
            b.attn1 = ZeroAttention()
        yield
    finally:
        for b, attn in zip(blocks, saved, strict=True):
            b.attn1 = attn


@contextmanager
def tome_patch(unet: nn.Module, family: str, max_downsample: int) -> Iterator[None]:
    """tomesd at TOME_RATIO; ldm UNets are wrapped as tomesd wants (`.model.diffusion_model`)."""
    import tomesd

    target: nn.Module = unet
    if family == "ldm":
        target = nn.Module()
        target.model = nn.Module()
        target.model.diffusion_model = unet
    tomesd.apply_patch(target, ratio=TOME_RATIO, max_downsample=max_downsample)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration: `kind` is "baseline", "bound", "todo" or "tome".

    has_ideal: the configuration acts on level 1 only (by its settings), so the bound gives its ideal time.
    """

    name: str
    kind: str
    settings: TodoSettings | None = None
    has_ideal: bool = False


BASELINE = Config("baseline", "baseline")


def make_configs(factors: list[float], kinds: set[str], with_tome: bool) -> list[Config]:
    """The configurations besides the baseline, in table order."""
    out: list[Config] = []
    if "bound" in kinds:
        out.append(Config("bound", "bound"))
    if "auto" in kinds:
        out.append(Config("auto", "todo", TodoSettings(), has_ideal=True))
    for f in factors:
        if "f" in kinds:
            out.append(Config(f"f{f:g}", "todo", TodoSettings(factor=f, factor_level2=1), has_ideal=True))
    for f in factors:
        if "f+l2" in kinds:
            out.append(Config(f"f{f:g}+l2", "todo", TodoSettings(factor=f, factor_level2=f)))
    if "tome" in kinds and with_tome:
        out.append(Config("tome", "tome"))
    return out


# ----------------------------------------------------------------------------------------------------------
# Running one model


@dataclass
class Model:
    """A built UNet and what the bench needs to run it."""

    name: str
    unet: nn.Module
    spec: unets.UnetSpec
    device: torch.device
    level1: list[nn.Module]
    level1_ds: int

    @property
    def family(self) -> str:
        return self.spec.family

    def context(self) -> ExitStack:
        """Inference mode, fp16 autocast for ldm on CUDA (as A1111 runs it), A1111's skip resize for ldm."""
        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.family == "ldm":
            stack.enter_context(unets.a1111_skip_resize())
            if self.device.type == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=torch.float16))
        return stack

    def inputs(self, width_px: int, height_px: int) -> tuple[tuple, dict[str, Any]]:
        args, kwargs = unets.example_inputs(self.unet, self.name, BATCH, height_px, width_px, TOKENS)
        if self.family == "diffusers":
            kwargs["return_dict"] = False
        return args, kwargs

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        out = self.unet(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    @contextmanager
    def configured(self, config: Config) -> Iterator[Any]:
        """Run the block with `config` installed; yields the ToDo handle for ToDo configs."""
        if config.kind == "bound":
            with level1_free(self.level1):
                yield None
        elif config.kind == "todo":
            with todo_apply(self.unet, config.settings, native_px=self.spec.native_px) as handle:
                yield handle
        elif config.kind == "tome":
            with tome_patch(self.unet, self.family, self.level1_ds):
                yield None
        else:
            yield None


def load_model(name: str, width: int, device: torch.device) -> Model:
    """Build `name` at `width` (fp32 on CPU; fp16 on CUDA) and find its level-1 transformer blocks."""
    unet = unets.build(name, width=width)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    nn.Module.to(unet, device=device, dtype=dtype)  # plain Module.to: no diffusers dtype warning
    if unets.SPECS[name].family == "ldm" and hasattr(unet, "dtype"):
        unet.dtype = dtype  # the ldm UNet casts h to this before the first block
    layout = layout_of(unet, unets.SPECS[name].native_px)
    model = Model(name, unet, unets.SPECS[name], device, [], layout.attention_ds[0])
    model.level1 = probe_level1(model)
    return model


def probe_level1(model: Model) -> list[nn.Module]:
    """The transformer blocks whose self-attention runs on level 1, found by one small call."""
    seen: dict[int, int] = {}
    blocks = transformer_blocks(model.unet)

    def recorder(block: nn.Module) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
            seen[id(block)] = int(x.shape[1])

        return record

    handles = [b.attn1.register_forward_pre_hook(recorder(b), with_kwargs=True) for b in blocks]
    try:
        args, kwargs = model.inputs(PROBE_PX, PROBE_PX)
        with model.context():
            model.call(args, kwargs)
    finally:
        for h in handles:
            h.remove()
    latent = PROBE_PX // 8
    tokens = math.prod(level_grid((latent, latent), model.level1_ds))
    return [b for b in blocks if seen.get(id(b)) == tokens]


# ----------------------------------------------------------------------------------------------------------
# Timing


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
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------
# Rows, table, JSON, plot


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


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
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


# ----------------------------------------------------------------------------------------------------------
# Command line


def parse_size(text: str) -> tuple[int, int]:
    """ "1024" -> (1024, 1024); "1000x744" -> (width 1000, height 744); multiples of 8 only."""
    parts = [int(p) for p in text.lower().split("x")]
    w, h = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if len(parts) > 2 or w % 8 or h % 8 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: give N or WxH, multiples of 8")
    return w, h


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments, with profile defaults (cuda, cpu or quick) filled in."""
    p = argparse.ArgumentParser(prog="python -m lib_todo.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--models", help=f"comma list of {', '.join(unets.SPECS)}")
    p.add_argument("--sizes", help='comma list of N or WxH in px, e.g. "512,1024,1000x744"')
    p.add_argument("--factors", help="ToDo factors for the f and f+l2 rows, e.g. 2,3,4")
    p.add_argument("--kernels", help="comma list of sdpa, chunked")
    p.add_argument("--configs", default="all", help=f"comma list of {', '.join(CONFIG_KINDS)} (default all)")
    p.add_argument("--repeats", type=int, help="timed rounds per cell (at least 3 are run when budget runs out)")
    p.add_argument("--warmup", type=int, help="untimed rounds per cell (CUDA 1, CPU 0: the first round is timed)")
    p.add_argument("--width", type=int, help="model channel width (320 = the real models)")
    p.add_argument("--threads", type=int, help="torch CPU threads (CPU default 1: stable ratios on a shared box)")
    p.add_argument("--budget-s", type=float, help="seconds for all cells; split evenly over the cells left")
    p.add_argument("--out", default="bench_out/bench.json", help="JSON path; the PNG is written next to it")
    p.add_argument("--quick", action="store_true", help="a small CPU run for the tests")
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG and reprint the table of a JSON")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    profile = PROFILES["quick" if args.quick else args.device.split(":")[0]]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device.startswith("cuda") and "models" not in _explicit(argv) and importlib.util.find_spec("ldm") is None:
        args.models = ",".join(m for m in _csv(args.models) if not m.startswith("ldm"))
    _check(p, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse unknown names and bad sizes before anything is built."""
    for option, given, known in (
        ("--models", _csv(args.models), unets.SPECS),
        ("--kernels", _csv(args.kernels), KERNELS),
        ("--configs", [] if args.configs == "all" else _csv(args.configs), CONFIG_KINDS),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        for text in _csv(args.sizes):
            parse_size(text)
        for text in _csv(args.factors):
            float(text)
    except (argparse.ArgumentTypeError, ValueError) as err:
        parser.error(str(err))


def _explicit(argv: list[str] | None) -> set[str]:
    given = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=")[0].replace("-", "_") for a in given if a.startswith("--")}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _summary(rows: list[dict[str, Any]]) -> str:
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


if __name__ == "__main__":
    sys.exit(main())
