"""The benchmark of ToDo, one engine for every model family: `python -m lib_todo.bench`.

For each model (`--models`: sd15, sdxl, ldm-sd15, ldm-sdxl, flux-double, flux-single, flux, qwen, zimage, lumina2,
wan, anima, ernie, krea), attention kernel and size, one call of the model is timed for the baseline, the A/A row
(the baseline again: the noise floor) and the configurations its family declares (UNets: bound, auto, f{F},
f{F}+l2, tome; DiTs: bound, auto, f{F}, f{F}-mask, f{F}-nb). The DiTs other than Flux are diffusers' real
transformers at their published width: one main block in fp32 on the CPU, the whole depth in bf16 on CUDA.
A configuration that cannot run (tomesd missing) and a model whose package is missing are listed with the reason;
a configuration that fails (out of memory) is listed with its error.

One timing loop (`measure.py`): every round calls the baseline, the A/A row and each configuration once, in an
order rotated from round to round, after `--warmup` untimed rounds. One estimator gives times and ratios: a
speed-up is the median over rounds of the ratio within a round (drift and load between rounds cancel), a row's
`ms` is the baseline's median time divided by its speed-up, `spread` the lowest and highest of those ratios. The
noise floor is the A/A row's largest distance from 1; a speed-up within it is marked "within noise". Ideal time:
`base - (1 - kept) * (base - bound)`, `kept` being the share of the bound's keys/values a configuration keeps
(UNets: 1/f^2 of level 1; DiTs: M/N of the image keys). The clock: CUDA events on CUDA; on a CPU the process's CPU
time with one torch thread (`--clock cpu-time` for more), else wall time.

Every option is checked before anything is built (`options.py`): a bad one is one line naming the flag, the
value and what is accepted, and exit status 2. Defaults come from a profile (explicit options win; a family may
have its own default sizes and width; `--help` shows them all):
- CUDA: sd15, sdxl, ldm-sd15 at 512, 1024, 1536, 2048, 1000x744, factors 2,3,4, both kernels, 1 warm-up and
  10 timed rounds (at least 3 once a cell's share of `--budget-s` 330 is spent):
  `python -m lib_todo.bench --device cuda --out results/h100/bench.json`.
- CPU: sd15 at width 64, 256 and 512 px, factors 2,4, sdpa only, 1 warm-up and up to 5 timed rounds within
  `--budget-s` 60, 1 torch thread: about 95 s of CPU time, so about 2 minutes on 2 idle cores.
  Narrow widths keep attention's share high, so CPU ratios exceed what the real width gets on a GPU.
- `--quick` (the tests): width 32, 128 and 256 px, factor 2, otherwise as CPU: about 30 s.

`--study NAME` runs a named study instead (`studies/`: balance, attention, bias); `--replot JSON...` redraws a
plot from results, also from the JSONs of earlier versions of the bench.

Files: `family.py` (the interface a family implements: Family, BenchModel, Config, Size), `registry.py` (one
entry per `--models` name), `families/` (one module per family: `unet.py`, `flux.py`, `qwen.py`, `lumina.py`,
`wan.py`, `anima.py`, `ernie.py`, `krea.py`; `dit.py` what DiT families share, with `DitTodoAdapter`, the one
place that touches lib_todo's internals), `studies/` (the named studies), `measure.py` (the timing loop, the
estimator, the rows), `report.py` (table, environment, JSON, plot), `options.py` (profiles and option checks),
`cli.py` (run, study, replot, main), `kernels.py` (the UNets' attention kernels), `unets.py` (the reference UNet
architectures, also used by the tests).
"""

from __future__ import annotations

from .cli import main
from .families.unet import UnetModel, load_model, unet_configs
from .family import AA, BASELINE, Applied, BenchModel, Config, Family, Size, image_size, video_size
from .kernels import attention_kernel, chunked_attention
from .measure import rel_change
from .options import OptionError, parse_args, parse_size
from .registry import FAMILIES, MODELS

__all__ = [
    "AA",
    "BASELINE",
    "FAMILIES",
    "MODELS",
    "Applied",
    "BenchModel",
    "Config",
    "Family",
    "OptionError",
    "Size",
    "UnetModel",
    "attention_kernel",
    "chunked_attention",
    "image_size",
    "load_model",
    "main",
    "parse_args",
    "parse_size",
    "rel_change",
    "unet_configs",
    "video_size",
]
