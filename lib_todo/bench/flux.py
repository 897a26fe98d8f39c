"""Flux rows of the benchmark: `python -m lib_todo.bench.flux`.

What is timed (diffusers' real modules, random weights):
- CPU: one full-width double block (`FluxTransformerBlock`) and one single block (`FluxSingleTransformerBlock`),
  hidden 3072, 24 heads of 128, RoPE from Flux's own position embedding, at the token counts of 1024, 1536
  and 2048 px (512 text tokens + 4096 / 9216 / 16384 image tokens), batch 1.
- GPU (`--device cuda`): the whole FluxTransformer2DModel (19 double + 38 single blocks) in bf16.
  UNTESTED ON A GPU: the code path exists, no GPU run of it has been made yet.

Configurations: `baseline`; `bound`, the image keys costing nothing (each block's attention runs over the text
keys only, every projection and MLP unchanged: no key/value reduction of the image can beat it); `f{F}` ToDo
with balance, `f{F}-nb` without. Ideal time of a factor: base - (1 - M/N) * (base - bound), M kept image keys of
N. Timing is round-robin (each round: baseline, then every configuration, order rotated), speed-up is the
median of the per-round ratios. Output change: ||out - base|| / ||base|| of the image tokens' output, for
spatially smooth image inputs (a coarse random field upsampled to the grid plus a little noise, as real
latents are far from white noise).

On a CPU shared with other jobs, `--clock cpu --threads 2` with OMP_WAIT_POLICY=PASSIVE times the process's CPU
time (the work done) instead of the wall clock (mostly the wait for a core). `--balance-study` measures the output
change with and without balance on a small random-weight FluxTransformer2DModel and on joint attention alone.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backends.flux_diffusers import ForwardShape, TodoFluxProcessor, apply_rope, joint_qkv
from ..grid import downsampled_grid
from ..layout import dit_layout
from ..plan import TodoPlan
from ..settings import AUTO, TodoSettings
from ..state import PassState
from .measure import rel_change
from .report import environment, write_json

HIDDEN, HEADS, HEAD_DIM = 3072, 24, 128
TEXT_TOKENS = 512
ROPE_AXES = (16, 56, 56)
PATCH_PX = 16  # 8 (VAE) x 2 (patchify)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True)
class FluxConfig:
    """One compared configuration: ToDo at `factor` (1 = baseline) with or without balance, or the bound."""

    name: str
    factor: float = 1.0
    balance: bool = True
    bound: bool = False
    settings: TodoSettings | None = None  # instead of `factor` (e.g. auto), as the main bench's configs carry


BASELINE = FluxConfig("baseline")


def make_flux_configs(factors: list[float], unbalanced: list[float] | None = None) -> list[FluxConfig]:
    """bound, then f{F} (balanced) per factor and f{F}-nb (unbalanced) for those in `unbalanced` (default all)."""
    out = [FluxConfig("bound", bound=True)]
    for f in factors:
        out.append(FluxConfig(f"f{f:g}", f))
        if unbalanced is None or f in unbalanced:
            out.append(FluxConfig(f"f{f:g}-nb", f, balance=False))
    return out


class TextKeysOnly:
    """The bound: a Flux attention processor whose queries attend to the text keys/values only."""

    def __init__(self, txt_len: int) -> None:
        self.txt_len = txt_len

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        q, k, v = joint_qkv(attn, hidden_states, encoder_hidden_states)  # (B, L, heads, D)
        if image_rotary_emb is not None:
            q, k = apply_rope(q, image_rotary_emb), apply_rope(k, image_rotary_emb)
        t = self.txt_len
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k[:, :t].transpose(1, 2), v[:, :t].transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is None:
            return out
        text, image = out.split_with_sizes([t, hidden_states.shape[1]], dim=1)
        return attn.to_out[1](attn.to_out[0](image.contiguous())), attn.to_add_out(text.contiguous())


@dataclass
class Case:
    """A timed module: `inputs(px)` -> (kwargs, txt_len, grid); `call(kwargs)` -> image tokens' output."""

    name: str
    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    attns: list[nn.Module] = field(default_factory=list)

    def inputs(self, px: int, height_px: int | None = None) -> tuple[dict[str, Any], int, tuple[int, int]]:
        """For a `px x height_px` image (square by default): latent px/8, patch grid ceil(latent/2)."""
        h, w = (-(-(side // 8) // 2) for side in (height_px or px, px))
        g = torch.Generator().manual_seed(px * 7919 + h)
        txt_ids = torch.zeros(TEXT_TOKENS, 3)
        img_ids = _grid_ids(h, w)
        if self.name == "transformer":
            cfg = self.module.config
            kwargs = {
                "hidden_states": _smooth_tokens(h, w, cfg.in_channels, g),
                "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, cfg.joint_attention_dim, generator=g),
                "pooled_projections": torch.randn(1, cfg.pooled_projection_dim, generator=g),
                "timestep": torch.tensor([0.5]),
                "img_ids": img_ids,
                "txt_ids": txt_ids,
                "return_dict": False,
            }
            if cfg.guidance_embeds:
                kwargs["guidance"] = torch.tensor([3.5])
        else:
            from diffusers.models.transformers.transformer_flux import FluxPosEmbed

            rope = FluxPosEmbed(10000, list(ROPE_AXES))(torch.cat([txt_ids, img_ids]))
            kwargs = {
                "hidden_states": _smooth_tokens(h, w, HIDDEN, g),
                "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, HIDDEN, generator=g),
                "temb": torch.randn(1, HIDDEN, generator=g),
                "image_rotary_emb": tuple(r.to(self.device) for r in rope),
            }
        kwargs = {k: _to(v, self.device, self.dtype) for k, v in kwargs.items()}
        return kwargs, TEXT_TOKENS, (h, w)

    def call(self, kwargs: dict[str, Any]) -> torch.Tensor:
        out = self.module(**kwargs)
        return out[0] if self.name == "transformer" else out[1]


@contextmanager
def configured(case: Case, config: FluxConfig, txt_len: int, grid: tuple[int, int]) -> Iterator[PassState | None]:
    """Run the block with `config`'s processors in place of the original ones (restored after)."""
    saved = [a.processor for a in case.attns]
    state = None
    try:
        if config.bound:
            for a in case.attns:
                a.processor = TextKeysOnly(txt_len)
        elif config.settings is not None or config.factor > 1.0:
            state = PassState(TodoPlan(config.settings or TodoSettings(factor=config.factor), dit_layout()))
            state.latent_hw = (2 * grid[0], 2 * grid[1])
            shape = ForwardShape(txt_len, grid)
            for a, original in zip(case.attns, saved, strict=True):
                a.processor = TodoFluxProcessor(original, state, shape, config.balance)
        yield state
    finally:
        for a, original in zip(case.attns, saved, strict=True):
            a.processor = original


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(case: Case, kwargs: dict[str, Any], clock: str = "wall") -> tuple[float, torch.Tensor]:
    """(ms, output) of one call; CUDA events and synchronisation on CUDA.

    On the CPU, clock "cpu" is the process's CPU time: on a box shared with other jobs it counts the work done,
    not the time spent waiting for a core (run with OMP_WAIT_POLICY=PASSIVE so idle threads do not spin).
    """
    if case.device.type != "cuda":
        start = CLOCKS[clock]()
        out = case.call(kwargs)
        return (CLOCKS[clock]() - start) * 1000.0, out
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(case.device)
    begin.record()
    out = case.call(kwargs)
    end.record()
    end.synchronize()
    return begin.elapsed_time(end), out


def measure(
    case: Case,
    configs: list[FluxConfig],
    px: int,
    repeats: int,
    budget_s: float,
    clock: str = "wall",
    warm: bool = True,
) -> list[dict[str, Any]]:
    """One untimed baseline call (unless not `warm`: then the first baseline call is also the reference), then
    rounds until `repeats`, or until `budget_s` is spent after one round."""
    kwargs, txt_len, grid = case.inputs(px)
    ms: dict[str, list[float]] = {c.name: [] for c in [BASELINE, *configs]}
    ratios: dict[str, list[float]] = {c.name: [] for c in configs}
    rel: dict[str, float] = {}
    applied: dict[str, str] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        base_out = case.call(kwargs) if warm else None  # warms the kernels for these shapes; the reference
        while len(ms["baseline"]) < repeats and (not ms["baseline"] or time.perf_counter() - start < budget_s):
            base_ms, out = timed(case, kwargs, clock)
            base_out = out if base_out is None else base_out
            del out
            ms["baseline"].append(base_ms)
            shift = len(ms["baseline"]) % len(configs)
            for config in configs[shift:] + configs[:shift]:
                with configured(case, config, txt_len, grid) as state:
                    t, out = timed(case, kwargs, clock)
                ms[config.name].append(t)
                ratios[config.name].append(base_ms / t)
                if config.name not in rel:
                    rel[config.name] = rel_change(out, base_out)
                    applied[config.name] = _applied(config, state, len(case.attns))
                del out
    return _rows(case, px, grid, configs, ms, ratios, rel, applied)


def _applied(config: FluxConfig, state: PassState | None, n_attn: int) -> str:
    if config.bound:
        return f"text keys only ({n_attn} attn)"
    if state is None:
        return ""
    return f"{state.applied.get(1, 1.0):g}x{'' if config.balance else ' no balance'} ({state.calls}/{n_attn} calls)"


def _rows(case, px, grid, configs, ms, ratios, rel, applied) -> list[dict[str, Any]]:
    base_ms = statistics.median(ms["baseline"])
    bound_ms = statistics.median(ms["bound"]) if ms.get("bound") else None
    n_img = grid[0] * grid[1]
    rows = []
    for config in [BASELINE, *configs]:
        m = statistics.median(ms[config.name])
        ideal = None
        if bound_ms is not None and config.factor > 1.0:
            kept = math.prod(downsampled_grid(*grid, config.factor))
            ideal = base_ms - (1.0 - kept / n_img) * (base_ms - bound_ms)
        rows.append(
            {
                "model": f"flux {case.name}",
                "size": f"{px}x{px}",
                "width_px": px,
                "tokens": f"{TEXT_TOKENS}+{n_img}",
                "config": config.name,
                "factor": config.factor,
                "balance": config.balance,
                "ms": m,
                "base_ms": base_ms,
                "speedup": 1.0 if config is BASELINE else statistics.median(ratios[config.name]),
                "ideal_ms": ideal,
                "share_of_ideal": ideal / m if ideal else None,
                "rel_change": 0.0 if config is BASELINE else rel[config.name],
                "applied": applied.get(config.name, ""),
                "rounds": len(ms[config.name]),
            }
        )
    return rows


def build_blocks(device: torch.device, dtype: torch.dtype, only: str | None = None) -> list[Case]:
    """One full-width double block and one single block (or `only` one of them), random weights."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    torch.manual_seed(0)
    cases = []
    for name, cls in (("double block", FluxTransformerBlock), ("single block", FluxSingleTransformerBlock)):
        if only not in (None, name):
            continue
        block = cls(HIDDEN, HEADS, HEAD_DIM).to(device=device, dtype=dtype).eval()
        cases.append(Case(name, block, device, dtype, [block.attn]))
    return cases


def build_transformer(device: torch.device, dtype: torch.dtype) -> Case:
    """The whole FluxTransformer2DModel at Flux.1-dev's config, random weights, built on `device`."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    with torch.device(device):
        model = FluxTransformer2DModel(guidance_embeds=True).to(dtype).eval()
    attns = [b.attn for b in [*model.transformer_blocks, *model.single_transformer_blocks]]
    return Case("transformer", model, device, dtype, attns)


def _smooth_tokens(h: int, w: int, channels: int, g: torch.Generator) -> torch.Tensor:
    """(1, h*w, C) tokens: a random field on a grid 8x coarser, bilinearly upsampled, plus 10% white noise."""
    coarse = torch.randn(1, channels, max(1, h // 8), max(1, w // 8), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    field = field / field.std() + 0.1 * torch.randn(1, channels, h, w, generator=g)
    return field.flatten(2).transpose(1, 2).contiguous()


def _grid_ids(h: int, w: int) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def _to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        is_ids = value.dim() == 2 and value.shape[-1] == 3
        return value.to(device) if is_ids or not value.is_floating_point() else value.to(device, dtype)
    return value


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| block | size | tokens | config | ms | speed-up | ideal ms | share of ideal | rel change | applied |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        share = "-" if r["share_of_ideal"] is None else f"{100 * r['share_of_ideal']:.0f}%"
        ideal = "-" if r["ideal_ms"] is None else f"{r['ideal_ms']:.0f}"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['tokens']} | {r['config']} | {r['ms']:.0f} | {r['speedup']:.2f}x | "
            f"{ideal} | {share} | {r['rel_change']:.4f} | {r['applied']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Speed-up against size per configuration (balanced solid, unbalanced dashed, bound bold), a panel a case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes.flat, models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        for config in dict.fromkeys(r["config"] for r in mine if r["config"] != "baseline"):
            pts = [(r["width_px"], r["speedup"]) for r in mine if r["config"] == config]
            style = {"linewidth": 3, "color": "black"} if config == "bound" else {}
            ax.plot(*zip(*pts, strict=True), "--" if config.endswith("-nb") else "-", marker="o", label=config, **style)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(model)
        ax.set_xlabel("image side (px)")
        ax.set_ylabel("speed-up over baseline")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def balance_study(px_list: list[int], factors: list[float], heads: int = 4) -> list[dict[str, Any]]:
    """Output change of a small random-weight FluxTransformer2DModel (2 double + 4 single blocks, `heads` heads
    of 128, fp32) under ToDo with and without balance, for smooth latents, per method: rows of rel change."""
    from diffusers import FluxTransformer2DModel

    from ..patch import apply

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        in_channels=64,
        num_layers=2,
        num_single_layers=4,
        num_attention_heads=heads,
        joint_attention_dim=256,
        pooled_projection_dim=64,
    ).eval()
    case = Case("transformer", model, torch.device("cpu"), torch.float32)
    rows = []
    with torch.inference_mode():
        for px in px_list:
            kwargs, _, grid = case.inputs(px)
            base = case.call(kwargs)
            for method in ("nearest-exact", "avg-pool"):
                for f in factors:
                    for balance in (True, False):
                        with apply(model, TodoSettings(factor=f, method=method)) as handle:
                            for a in model.modules():
                                if isinstance(getattr(a, "processor", None), TodoFluxProcessor):
                                    a.processor.balance = balance
                            change = rel_change(case.call(kwargs), base)
                        rows.append(
                            {
                                "size": px,
                                "grid": f"{grid[0]}x{grid[1]}",
                                "method": method,
                                "factor": f,
                                "balance": balance,
                                "rel_change": change,
                                "calls": handle.state.calls,
                                "what": "transformer",
                            }
                        )
                        print(rows[-1], file=sys.stderr, flush=True)
    return rows + attention_study(px_list, factors, heads)


def attention_study(px_list: list[int], factors: list[float], heads: int = 4) -> list[dict[str, Any]]:
    """Output change of `joint_attention` alone against full attention: q, k, v smooth on the image grid (as
    `_smooth_tokens`), RMS-normalised q and k as Flux's qk-norm leaves them, Flux's RoPE; 512 random text tokens."""
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    from ..joint_attention import joint_attention

    rows = []
    for px in px_list:
        h = w = px // PATCH_PX
        g = torch.Generator().manual_seed(px)
        rope = FluxPosEmbed(10000, list(ROPE_AXES))(torch.cat([torch.zeros(TEXT_TOKENS, 3), _grid_ids(h, w)]))
        qkv = []
        for _ in range(3):
            image = _smooth_tokens(h, w, heads * HEAD_DIM, g)
            text = torch.randn(1, TEXT_TOKENS, heads * HEAD_DIM, generator=g)
            qkv.append(torch.cat([text, image], dim=1).unflatten(-1, (heads, HEAD_DIM)))  # (1, L, heads, D)
        q, k, v = qkv
        q, k = (F.rms_norm(x, (HEAD_DIM,)) for x in (q, k))
        q, k = (apply_rotary_emb(x, rope, sequence_dim=1).transpose(1, 2) for x in (q, k))
        v = v.transpose(1, 2)
        full = F.scaled_dot_product_attention(q, k, v)
        for f in factors:
            for balance in (True, False):
                out = joint_attention(q, k, v, TEXT_TOKENS, (h, w), f, balance=balance)
                rows.append(
                    {
                        "size": px,
                        "grid": f"{h}x{w}",
                        "method": "nearest-exact",
                        "factor": f,
                        "balance": balance,
                        "rel_change": rel_change(out, full),
                        "what": "attention",
                    }
                )
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def bias_study(px: int = 1024, factor: int = 2, repeats: int = 3) -> list[dict[str, Any]]:
    """CPU time of three ways to add the balance bias, against plain SDPA over the same keys (no bias): full
    width (24 heads of 128), bf16, `px` image side, median of `repeats` calls after one warm-up."""
    h = w = px // PATCH_PX
    kept = math.prod(downsampled_grid(h, w, factor))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, HEADS, TEXT_TOKENS + h * w, HEAD_DIM, generator=g).bfloat16()
    k, v = (torch.randn(1, HEADS, TEXT_TOKENS + kept, HEAD_DIM, generator=g).bfloat16() for _ in range(2))
    bias = torch.cat([torch.zeros(TEXT_TOKENS), torch.full((kept,), math.log(factor**2))])

    def plain() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    def mask() -> torch.Tensor:
        from ..joint_attention import biased_attention

        return biased_attention(q, k, v, bias)

    def extra_dim() -> torch.Tensor:  # q gets a column of ones, k the bias / scale: padded to a multiple of 8
        scale, pad = 1 / math.sqrt(HEAD_DIM), 8
        qe = F.pad(torch.cat([q, torch.ones_like(q[..., :1])], -1), (0, pad - 1))
        ke = F.pad(
            torch.cat([k, (bias / scale).to(k.dtype).view(1, 1, -1, 1).expand(1, HEADS, -1, 1)], -1), (0, pad - 1)
        )
        return F.scaled_dot_product_attention(qe, ke, F.pad(v, (0, pad)), scale=scale)[..., :HEAD_DIM]

    def two_merged() -> torch.Tensor:  # text keys and image keys apart, merged by their log-sum-exp
        op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        t = TEXT_TOKENS
        out_t, lse_t = op(q, k[:, :, :t], v[:, :, :t])[:2]
        out_i, lse_i = op(q, k[:, :, t:], v[:, :, t:])[:2]
        lse_i = lse_i + math.log(factor**2)
        top = torch.maximum(lse_t, lse_i)
        wt, wi = (lse_t - top).exp().unsqueeze(-1), (lse_i - top).exp().unsqueeze(-1)
        return ((out_t.float() * wt + out_i.float() * wi) / (wt + wi)).to(q.dtype)

    rows, reference = [], mask().float()
    for fn in (plain, mask, extra_dim, two_merged):
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            out = fn()
            times.append((time.process_time() - start) * 1000.0)
        diff = float((out.float() - reference).abs().max())
        rows.append(
            {
                "what": "bias",
                "variant": fn.__name__,
                "size": px,
                "factor": factor,
                "cpu_ms": statistics.median(times),
                "max_abs_diff_to_mask": diff,
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


class FluxBenchModel:
    """A Case seen through the main bench's `BenchModel` interface (registry.py). ToDo runs balanced there;
    `python -m lib_todo.bench.flux` also has the unbalanced rows."""

    def __init__(self, case: Case, name: str) -> None:
        self.case, self.name, self.device = case, name, case.device
        self._shape: tuple[int, tuple[int, int]] = (TEXT_TOKENS, (1, 1))

    def inputs(self, width_px: int, height_px: int) -> tuple[tuple, dict[str, Any]]:
        kwargs, txt_len, grid = self.case.inputs(width_px, height_px)
        self._shape = (txt_len, grid)
        return (), kwargs

    def context(self) -> Any:
        return torch.inference_mode()

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        return self.case.call(kwargs)

    def kernel(self, kernel: str) -> Any:
        return nullcontext()

    def cannot_run(self, config: Any) -> str | None:
        if config.kind == "tome":
            return "tomesd merges UNet tokens only"
        if config.kind == "todo" and config.settings.factor_level2 not in (AUTO, 1.0):
            return "a DiT has one level: no level-2 factor"
        return None

    @contextmanager
    def configured(self, config: Any) -> Iterator[Any]:
        flux = FluxConfig(config.name, bound=config.kind == "bound", settings=config.settings)
        if config.kind not in ("bound", "todo"):
            flux = BASELINE
        with configured(self.case, flux, *self._shape) as state:
            yield state

    def applied(self, config: Any, handle: Any) -> tuple[str, float]:
        if config.kind == "bound":
            return f"text keys only ({len(self.case.attns)} attn)", 1.0
        factor = handle.applied.get(1, 1.0) if handle is not None else 1.0
        return (f"{factor:g}x balanced" if factor > 1.0 else "not downsampled"), factor


def load_bench_model(which: str) -> Callable[[int, torch.device], FluxBenchModel]:
    """Loader for registry.py: "flux-double", "flux-single" (full-width blocks) or "flux" (the whole model, bf16
    on CUDA). The bench's `--width` does not apply: Flux runs at its real width."""

    def load(width: int, device: torch.device) -> FluxBenchModel:
        dtype = torch.bfloat16
        if which == "flux":
            return FluxBenchModel(build_transformer(device, dtype), which)
        cases = build_blocks(device, dtype, only="double block" if which == "flux-double" else "single block")
        return FluxBenchModel(cases[0], which)

    return load


def replot(paths: list[Path], out: Path) -> int:
    """One PNG (beside `out`) and one table of the rows of several results JSONs (e.g. sizes run apart)."""
    import json

    data = [json.loads(p.read_text()) for p in paths]
    rows = [r for d in data for r in d["rows"]]
    clock = "CPU time" if data[0].get("clock") == "cpu" else "wall clock"
    plot(rows, out.with_suffix(".png"), f"{data[0]['device']}, {data[0].get('dtype', '')}, batch 1, {clock}")
    print(table(rows))
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """Errors are one line (what was wrong and what is accepted) and exit 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="python -m lib_todo.bench.flux", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (one double + one single block) or cuda (whole model)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--sizes", default="1024,1536,2048", help="square image sides in px, multiples of 16")
    p.add_argument("--factors", default="2,3,4")
    p.add_argument("--unbalanced", default=None, help="factors that also get an f{F}-nb row (default: all)")
    p.add_argument("--no-warmup", action="store_true", help="no untimed call before a cell's rounds")
    p.add_argument("--replot", nargs="+", default=None, help="results JSONs: one PNG (at --out) and table of all")
    p.add_argument("--repeats", default="3", help="timed rounds per cell (at most): one number, or one per size")
    p.add_argument("--budget-s", type=float, default=300.0, help="no new round once a cell ran this long")
    p.add_argument("--threads", type=int, default=None, help="torch threads on the CPU")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS), help="CPU only: wall time or process CPU time")
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default results/cpu/flux_blocks.json on the CPU, "
        "results/gpu/flux_transformer.json on CUDA); the PNG goes beside it",
    )
    p.add_argument("--balance-study", action="store_true", help="output change with/without balance, small model")
    return p


def _checked(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
        args.factors = [float(f) for f in args.factors.split(",")]
        args.repeats = [int(r) for r in args.repeats.split(",")]
        args.unbalanced = None if args.unbalanced is None else [float(f) for f in args.unbalanced.split(",")]
    except ValueError:
        p.error(
            f"--sizes/--factors/--repeats {args.sizes!r}/{args.factors!r}/{args.repeats!r}: accepted: "
            "comma-separated numbers"
        )
    if any(s < 64 or s % PATCH_PX for s in args.sizes):
        p.error(f"--sizes {args.sizes}: accepted: sides of at least 64 px, multiples of {PATCH_PX}")
    if any(not 1.0 < f <= 8.0 for f in args.factors):
        p.error(f"--factors {args.factors}: accepted: factors above 1 and at most 8")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        p.error(f"--device {args.device!r}: accepted: cpu, cuda, cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device here; accepted: cpu")
    if len(args.repeats) == 1:
        args.repeats = args.repeats * len(args.sizes)
    if len(args.repeats) != len(args.sizes) or min(args.repeats) < 1:
        p.error(f"--repeats {args.repeats}: accepted: one count of 1 or more, or one per size")
    if args.out is None and args.balance_study:
        args.out = "results/cpu/flux_balance.json"
    elif args.out is None:
        args.out = "results/cpu/flux_blocks.json" if args.device == "cpu" else "results/gpu/flux_transformer.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = _checked(_parser(), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.replot:
        return replot([Path(p) for p in args.replot], Path(args.out))
    if args.balance_study:
        rows = balance_study(args.sizes, args.factors) + bias_study()
        write_json(Path(args.out), {**environment(torch.device("cpu")), "args": vars(args)}, rows)
        return 0
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cases = build_blocks(device, dtype) if device.type == "cpu" else [build_transformer(device, dtype)]
    configs = make_flux_configs(args.factors, args.unbalanced)
    out = Path(args.out)
    meta = {
        **environment(device),
        "dtype": args.dtype,
        "args": vars(args),
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "untested_on_gpu": device.type == "cuda",
        "clock": args.clock,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for px, repeats in zip(args.sizes, args.repeats, strict=True):
        for case in cases:
            tc = time.perf_counter()
            cell = measure(case, configs, px, repeats, args.budget_s, args.clock, not args.no_warmup)
            rows.extend(cell)
            meta["elapsed_s"] = time.perf_counter() - t0
            write_json(out, meta, rows)
            speed = ", ".join(f"{r['config']} {r['speedup']:.2f}x" for r in cell[1:])
            print(
                f"{case.name} {px}px ({cell[0]['rounds']} rounds, {time.perf_counter() - tc:.0f} s): "
                f"base {cell[0]['ms']:.0f} ms, {speed}",
                file=sys.stderr,
                flush=True,
            )
    clock = "CPU time" if args.clock == "cpu" and device.type == "cpu" else "wall clock"
    plot(rows, out.with_suffix(".png"), f"{meta['device']}, {args.dtype}, batch 1, {clock}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
