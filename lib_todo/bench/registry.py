"""The models the bench can run, by name: one `ModelEntry` each, in `ENTRIES`.

A new model family is one module and one entry. The module builds objects with the `BenchModel` interface
below; the entry names what it needs and where it runs by default. The command line, the validation, the
timing, the table and the plot take every entry alike. For example the Flux block rows (`flux.py`) plug in
with one edit here::

    from .flux import FLUX_ENTRIES            # must not import diffusers at module level
    ENTRIES = (*UNET_ENTRIES, *FLUX_ENTRIES)

and nothing else: `--models` then accepts their names, `--help` lists them, and a missing package lists their
rows with the reason instead of failing the run.

`BenchModel` below is the interface; `model.UnetModel` is the reference implementation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .kernels import KERNELS
from .variants import Config

LDM_INSTALL = "pip install --no-deps stable-diffusion-sdkit==2.1.5"


class BenchModel(Protocol):
    """What the bench times: a built model, its inputs and the configurations it can run."""

    name: str
    device: torch.device

    def inputs(self, width_px: int, height_px: int) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) of one call at that image size in pixels (latent = size / 8)."""

    def context(self) -> AbstractContextManager[Any]:
        """What every call runs inside (inference mode, autocast, ...)."""

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """One forward; its output is what the output change compares."""

    def kernel(self, kernel: str) -> AbstractContextManager[Any]:
        """Attention runs with `kernel` (one of the entry's `kernels`) inside this context."""

    def cannot_run(self, config: Config) -> str | None:
        """Why `config` cannot run on this model (a missing package, no level 2), or None."""

    def configured(self, config: Config) -> AbstractContextManager[Any]:
        """`config` installed inside this context; yields ToDo's handle (with `.applied`) or None."""

    def applied(self, config: Config, handle: Any) -> tuple[str, float]:
        """What `config` really did, for the table, and the level-1 factor its ideal time uses."""


@dataclass(frozen=True)
class ModelEntry:
    """One model the bench can run.

    name: what `--models` takes. summary: one line for `--help`.
    load: `(width, device) -> BenchModel`, the model built (imports of optional packages go inside it).
    needs: `(module, install command)` pairs; when a module does not import, the model's rows say so.
    kernels: the attention kernels it can run with. profiles: the profiles (cuda, cpu, quick) whose default
    `--models` include it. sizes: its default `--sizes` per profile, where they differ from the profile's.
    """

    name: str
    summary: str
    load: Callable[[int, torch.device], BenchModel]
    needs: tuple[tuple[str, str], ...] = ()
    kernels: tuple[str, ...] = KERNELS
    profiles: tuple[str, ...] = ()
    sizes: Mapping[str, str] = field(default_factory=dict)


def _unet_loader(name: str) -> Callable[[int, torch.device], BenchModel]:
    def load(width: int, device: torch.device) -> BenchModel:
        from .model import load_model

        return load_model(name, width, device)

    return load


DIFFUSERS = (("diffusers", "pip install diffusers"),)
LDM = (("ldm", LDM_INSTALL),)
UNET_ENTRIES = (
    ModelEntry("sd15", "SD1.5 UNet (diffusers)", _unet_loader("sd15"), DIFFUSERS, profiles=("cuda", "cpu", "quick")),
    ModelEntry("sdxl", "SDXL UNet (diffusers)", _unet_loader("sdxl"), DIFFUSERS, profiles=("cuda",)),
    ModelEntry("ldm-sd15", "SD1.5 UNet (A1111's ldm)", _unet_loader("ldm-sd15"), LDM, profiles=("cuda",)),
    ModelEntry("ldm-sdxl", "SDXL-like UNet (A1111's ldm, one block per level)", _unet_loader("ldm-sdxl"), LDM),
)


def _flux_loader(name: str) -> Callable[[int, torch.device], BenchModel]:
    def load(width: int, device: torch.device) -> BenchModel:
        from .flux import load_bench_model  # flux.py imports the timing code, which imports this module

        return load_bench_model(name)(width, device)

    return load


FLUX_ENTRIES = (
    ModelEntry(
        "flux-double",
        "Flux double block, full width, bf16 (diffusers)",
        _flux_loader("flux-double"),
        DIFFUSERS,
        kernels=("sdpa",),
    ),
    ModelEntry(
        "flux-single",
        "Flux single block, full width, bf16 (diffusers)",
        _flux_loader("flux-single"),
        DIFFUSERS,
        kernels=("sdpa",),
    ),
    ModelEntry(
        "flux",
        "Flux.1-dev transformer, random weights, bf16 (diffusers; GPU, untested)",
        _flux_loader("flux"),
        DIFFUSERS,
        kernels=("sdpa",),
    ),
)
ENTRIES: tuple[ModelEntry, ...] = (*UNET_ENTRIES, *FLUX_ENTRIES)
MODELS: dict[str, ModelEntry] = {e.name: e for e in ENTRIES}


def missing(entry: ModelEntry) -> str | None:
    """Why `entry` cannot be built here ("needs ldm: pip install ..."), or None."""
    for module, install in entry.needs:
        if importlib.util.find_spec(module) is None:
            return f"needs {module} ({install})"
    return None


def build(name: str, width: int, device: torch.device) -> BenchModel:
    """The BenchModel `name` built at `width` on `device`."""
    return MODELS[name].load(width, device)


def defaults(profile: str) -> list[str]:
    """The model names a profile runs by default."""
    return [e.name for e in ENTRIES if profile in e.profiles]
