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
score chunk stays under `CHUNK_BYTES`). The kernel code (`kernels.py`) is benchmark support, not part of ToDo.

Defaults come from a profile (explicit options win):
- CUDA: sd15, sdxl, ldm-sd15 (when `ldm` imports) at 512, 1024, 1536, 2048, 1000x744, factors 2,3,4, both
  kernels, 10 rounds (at least 3 once a cell's share of `--budget-s` 330 is spent), 1 warm-up round:
  `python -m lib_todo.bench --device cuda --out results/h100/bench.json` takes about 6 minutes on an H100.
- CPU: sd15 at width 64, 256 and 512 px, factors 2,4, sdpa, 3 rounds, 1 torch thread (2 threads on a shared
  2-core box time 2-4x slower and far noisier), the first round timed: about 1 minute on 2 idle cores.
  Narrow widths keep attention's share high, so CPU ratios exceed what the real width gets on a GPU.
- `--quick` (the tests): width 32, 128 and 256 px, otherwise as CPU: about 15 s.

Files: `kernels.py` (attention kernels), `variants.py` (the compared configurations), `model.py` (a built UNet
and its level-1 blocks), `measure.py` (round-robin timing and table rows), `report.py` (table, environment,
JSON, plot), `options.py` (profiles and command-line options), `cli.py` (run, replot, main).
"""

from __future__ import annotations

from .cli import main
from .kernels import attention_kernel, chunked_attention
from .measure import rel_change
from .model import load_model
from .options import parse_size
from .variants import make_configs

__all__ = ["attention_kernel", "chunked_attention", "load_model", "main", "make_configs", "parse_size", "rel_change"]
