"""Study "bias": what the balance bias costs as an input of the attention kernel, timed by the bench's loop.

One attention call at full Flux width (24 heads of 128, bf16): every query of a `size` image (512 text + h*w
image tokens) against the keys ToDo keeps at the first `--factors` value (512 text + M image keys). Baseline:
plain SDPA over those keys (no bias: what `balance=False` runs). Compared, through `measure.measure_cell` (so
with the same estimator and A/A noise floor as every family):
- `mask`: the bias as an additive float mask to SDPA (how ToDo adds it);
- `extra-dim`: q gets a channel of ones, k one holding bias / scale, the head dim padded to a multiple of 8;
- `two-merged`: text keys and image keys attended apart and merged by their log-sum-exp (CPU flash op only).
`applied` says how far each output lies from the mask's (max |difference|): the three are the same attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from ...grid import downsampled_grid
from ..families.dit import DitTodoAdapter
from ..families.flux import HEAD_DIM, HEADS, PATCH_PX, TEXT_TOKENS
from ..family import Applied, Config, Size
from ..measure import make_rows, measure_cell
from . import Log

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def mask(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return DitTodoAdapter.biased_attention(q, k, v, bias)


def extra_dim(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q gets a channel of ones, k the bias / scale; head dim padded to a multiple of 8."""
    heads, d = q.shape[1], q.shape[-1]
    scale, pad = 1 / math.sqrt(d), 8
    qe = F.pad(torch.cat([q, torch.ones_like(q[..., :1])], -1), (0, pad - 1))
    column = (bias / scale).to(k.dtype).view(1, 1, -1, 1).expand(k.shape[0], heads, -1, 1)
    ke = F.pad(torch.cat([k, column], -1), (0, pad - 1))
    return F.scaled_dot_product_attention(qe, ke, F.pad(v, (0, pad)), scale=scale)[..., :d]


def two_merged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Text keys and image keys apart, merged by their log-sum-exp (the image side carrying the bias)."""
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    t = TEXT_TOKENS
    out_t, lse_t = op(q, k[:, :, :t], v[:, :, :t])[:2]
    out_i, lse_i = op(q, k[:, :, t:], v[:, :, t:])[:2]
    lse_i = lse_i + float(bias[t:].max())  # one cell size everywhere when the factor divides the grid
    top = torch.maximum(lse_t, lse_i)
    wt, wi = (lse_t - top).exp().unsqueeze(-1), (lse_i - top).exp().unsqueeze(-1)
    return ((out_t.float() * wt + out_i.float() * wi) / (wt + wi)).to(q.dtype)


VARIANTS: dict[str, Attention] = {"mask": mask, "extra-dim": extra_dim, "two-merged": two_merged}
CONFIGS = [Config(name, name) for name in VARIANTS]


class BiasVariants:
    """One attention call with the balance bias added one way or another: a `BenchModel` for the timing loop."""

    def __init__(self, factor: float, device: torch.device) -> None:
        self.name = f"balance bias, f{factor:g} ({HEADS} heads of {HEAD_DIM}, bf16)"
        self.device, self.factor, self.attend = device, factor, plain
        self.description = f"one attention call, {HEADS} heads of {HEAD_DIM}, bf16, keys kept at factor {factor:g}"

    def inputs(self, size: Size) -> tuple[tuple, dict[str, Any]]:
        h, w = size.height // PATCH_PX, size.width // PATCH_PX
        kept_h, kept_w = downsampled_grid(h, w, self.factor)
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, HEADS, TEXT_TOKENS + h * w, HEAD_DIM, generator=g).bfloat16()
        k, v = (torch.randn(1, HEADS, TEXT_TOKENS + kept_h * kept_w, HEAD_DIM, generator=g).bfloat16() for _ in "kv")
        cell = (h * w) / (kept_h * kept_w)  # the mean cell size; exact when the factor divides the grid
        bias = torch.cat([torch.zeros(TEXT_TOKENS), torch.full((kept_h * kept_w,), math.log(cell))])
        return tuple(x.to(self.device) for x in (q, k, v, bias)), {}

    def context(self) -> Any:
        return torch.inference_mode()

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        return self.attend(*args)

    def kernel(self, kernel: str) -> Any:
        return nullcontext()

    def cannot_run(self, config: Config) -> str | None:
        return "a CPU flash op" if config.name == "two-merged" and self.device.type != "cpu" else None

    @contextmanager
    def configured(self, config: Config) -> Iterator[None]:
        self.attend = VARIANTS.get(config.kind, plain)
        try:
            yield None
        finally:
            self.attend = plain

    def applied(self, config: Config, handle: Any) -> Applied:
        return Applied("plain SDPA, no bias" if config.kind in ("baseline", "aa") else "")


def run(name: str, opts: Any, log: Log) -> list[dict[str, Any]]:
    """Per size: the variants timed against plain SDPA, and each output's distance to the mask's."""
    model = BiasVariants(opts.factor_list[0], torch.device(opts.device))
    rows = []
    for size in opts.size_list:
        series = measure_cell(model, CONFIGS, size, opts.repeats, opts.warmup, opts.budget_s, opts.clock_name)
        cell = make_rows(model.name, "sdpa", size, series)
        args, _ = model.inputs(size)
        with torch.inference_mode():
            reference = mask(*args).float()
            for r in cell:
                if r["config"] in VARIANTS and not (r["error"] or r["skipped"]):
                    gap = float((VARIANTS[r["config"]](*args).float() - reference).abs().max())
                    r["applied"] = f"largest difference to the mask's output {gap:.4f}"
        rows.extend(cell)
        log(f"  {model.name} {size.label}: " + ", ".join(f"{r['config']} {r['ms']:.0f} ms" for r in cell if r["ms"]))
    return rows
