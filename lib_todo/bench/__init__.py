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
- `tome`: tomesd 0.5 on the same level as the bound (max_downsample 1 on SD1.5, 2 on SDXL).

A configuration that cannot run (tomesd missing, a kernel a model lacks) and a model whose package is missing
are listed in the table with the reason; a configuration that fails (out of memory) is listed with its error.

Timing is round-robin: every round calls the baseline and each configuration once, in an order rotated from
round to round. One estimator gives times and ratios: a speed-up is the median over rounds of the ratio within
a round (drift and load between rounds cancel), and a row's `ms` is the baseline's median time divided by its
speed-up; `spread` is the lowest and the highest of those ratios. Ideal time for a level-1 factor f:
`base - (1 - 1/f^2) * (base - bound)`; `auto` uses its applied level-1 factor, so where auto also acts on
level 2 its share of ideal may exceed 100%. `+l2` rows have no ideal (the bound covers level 1 only).
The clock: CUDA events on CUDA; on a CPU with one torch thread, the process's CPU time (the wall time of an
idle machine, blind to other processes holding the cores); else wall time.

Kernels: `sdpa` (torch scaled_dot_product_attention: diffusers' default processor; a small SDPA forward
for ldm) and `chunked` (Doggettx-style memory-saving attention in plain torch: queries split so that one
score chunk stays under `CHUNK_BYTES`). The kernel code (`kernels.py`) is benchmark support, not part of ToDo.

Every option is checked before anything is built (`options.py`): a bad one is one line naming the flag, the
value and what is accepted, and exit status 2. Defaults come from a profile (explicit options win; `--help`
shows them all):
- CUDA: sd15, sdxl, ldm-sd15 at 512, 1024, 1536, 2048, 1000x744, factors 2,3,4, both kernels, 1 warm-up and
  10 timed rounds (at least 3 once a cell's share of `--budget-s` 330 is spent):
  `python -m lib_todo.bench --device cuda --out results/h100/bench.json`.
- CPU: sd15 at width 64, 256 and 512 px, factors 2,4, sdpa only, 1 warm-up and up to 5 timed rounds within
  `--budget-s` 60, 1 torch thread: about 85 s of CPU time, so about 1.5 minutes on 2 idle cores.
  Narrow widths keep attention's share high, so CPU ratios exceed what the real width gets on a GPU.
- `--quick` (the tests): width 32, 128 and 256 px, factor 2, otherwise as CPU: about 20 s.

Files: `registry.py` (the models, one entry per model; how a new family plugs in), `kernels.py` (attention
kernels), `variants.py` (the compared configurations), `model.py` (a built UNet: the reference BenchModel),
`unets.py` (the reference UNet architectures, also used by the tests), `measure.py` (round-robin timing and
table rows), `report.py` (table, environment, JSON, plot), `options.py` (profiles and option checks), `cli.py`
(run, replot, main).
"""

from __future__ import annotations

from .cli import main
from .kernels import attention_kernel, chunked_attention
from .measure import rel_change
from .model import load_model
from .options import OptionError, parse_args, parse_size
from .registry import ENTRIES, MODELS, ModelEntry
from .variants import make_configs

__all__ = [
    "ENTRIES",
    "MODELS",
    "ModelEntry",
    "OptionError",
    "attention_kernel",
    "chunked_attention",
    "load_model",
    "main",
    "make_configs",
    "parse_args",
    "parse_size",
    "rel_change",
]
