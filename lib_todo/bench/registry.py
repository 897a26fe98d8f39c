"""The families the bench can run, by `--models` name: one `Family` entry each (see `family.py`).

A new family is one module in `families/` and one entry here; the command line, the checks, the timing loop,
the table, the plot and the JSON take it as they take the others. For example a Qwen-Image block::

    from .families import flux, qwen, unet     # a family module imports no optional package at its top
    FAMILIES = (*unet.FAMILIES, *flux.FAMILIES, *qwen.FAMILIES)

(which is how the DiT families below came in: `qwen`, `zimage` and `lumina2`, `wan`, `anima`, `ernie`, `krea`).

`--models` then accepts its names, `--help` lists them, and a missing package lists its rows with the reason.
"""

from __future__ import annotations

import importlib.util

import torch

from .families import anima, ernie, flux, krea, lumina, qwen, unet, wan
from .family import BenchModel, Family

FAMILIES: tuple[Family, ...] = (
    *unet.FAMILIES,
    *flux.FAMILIES,
    *qwen.FAMILIES,
    *lumina.FAMILIES,
    *wan.FAMILIES,
    *anima.FAMILIES,
    *ernie.FAMILIES,
    *krea.FAMILIES,
)
MODELS: dict[str, Family] = {f.name: f for f in FAMILIES}


def missing(family: Family) -> str | None:
    """Why `family` cannot be built here ("needs ldm (pip install ...)"), or None."""
    for module, install in family.needs:
        if importlib.util.find_spec(module) is None:
            return f"needs {module} ({install})"
    return None


def build(name: str, width: int, device: torch.device) -> BenchModel:
    """The BenchModel `name` built at `width` on `device`."""
    return MODELS[name].load(width, device)


def defaults(profile: str) -> list[str]:
    """The model names a profile runs by default."""
    return [f.name for f in FAMILIES if profile in f.profiles]
