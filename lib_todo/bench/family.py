"""The family interface: what one model family gives the bench, and nothing more.

A family is one module (in `families/`) and one entry in `registry.py`. The module builds its model and inputs
and declares its configurations and its bound; the bench engine (options, timing loop, estimator, rows, table,
plot, JSON) treats every family alike. A family provides:

- a `Family` entry: its `--models` name, a one-line summary, `load(width, device) -> BenchModel`, the packages
  it needs, its attention kernels, the profiles that run it by default, its default sizes, how its `--sizes`
  are written (`parse_size`: `image_size` for images, `video_size` for a frame count too, or its own), its
  `--width` rule, and `configs(factors, kinds) -> [Config]`: the configurations it compares with its baseline;
- a `BenchModel`: the built model (inputs for a `Size`, one call, the configurations installed one at a time,
  and for each what it really did: `Applied(text, kept)`).

The engine adds the baseline and the A/A row (the baseline timed against itself: the noise floor) to every
cell. The ideal time of a configuration is `base - (1 - kept) * (base - bound)`, `kept` being the share of the
keys/values on the bound's attention that it keeps (UNets: 1/f^2 on level 1; a DiT: M/N of its image keys);
the family says what `bound` means for it (UNets: level-1 self-attention free; a DiT: the text keys only).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch

from ..settings import TodoSettings

KERNELS = ("sdpa", "chunked")  # every kernel name any family knows; a family runs a subset


class Size(NamedTuple):
    """An image (frames 1) or a video size in pixels: what `--sizes` gives a family's `inputs`."""

    width: int
    height: int
    frames: int = 1

    @property
    def label(self) -> str:
        """ "1024x1024", or "832x480x17f" for 17 frames: the row's `size` and the plot's tick."""
        return f"{self.width}x{self.height}" + (f"x{self.frames}f" if self.frames > 1 else "")

    @property
    def pixels(self) -> int:
        """Pixels over all frames: the plot orders sizes by it."""
        return self.width * self.height * self.frames


class SizeError(ValueError):
    """A size a family cannot take: `str()` says what is accepted."""


def image_size(text: str, multiple: int = 8, low: int = 64, high: int = 8192) -> Size:
    """ "1024" -> Size(1024, 1024); "1000x744" -> Size(width 1000, height 744); sides multiples of `multiple`."""
    accepted = f"N or WxH in px, multiples of {multiple} from {low} to {high}"
    try:
        parts = [int(p) for p in text.strip().lower().split("x")]
    except ValueError:
        raise SizeError(accepted) from None
    if len(parts) not in (1, 2) or any(p % multiple or not low <= p <= high for p in parts):
        raise SizeError(accepted)
    return Size(parts[0], parts[-1])


VIDEO_PRESETS = {"480p": (832, 480), "720p": (1280, 720)}  # Wan's 16:9 sizes
_VIDEO = re.compile(r"^(?:(\d+)x(\d+)|(\d+p))(?:x(\d+))?$")


def video_size(text: str, default_frames: int = 17, multiple: int = 16, low: int = 64, high: int = 4096) -> Size:
    """A video size: "832x480x17" (W x H x frames), "480p x 17 frames", "480p" (`default_frames` frames);
    presets: 480p = 832x480, 720p = 1280x720. For a family whose inputs have a frame count (Wan)."""
    accepted = (
        f"WxHxF or {'/'.join(VIDEO_PRESETS)} [x F frames], sides multiples of {multiple} from {low} to {high}, "
        "F at least 1"
    )
    compact = re.sub(r"\s+|frames?$", "", text.strip().lower())
    match = _VIDEO.match(compact)
    if not match or (match[3] and match[3] not in VIDEO_PRESETS):
        raise SizeError(accepted)
    width, height = VIDEO_PRESETS[match[3]] if match[3] else (int(match[1]), int(match[2]))
    frames = int(match[4]) if match[4] else default_frames
    if frames < 1 or any(p % multiple or not low <= p <= high for p in (width, height)):
        raise SizeError(accepted)
    return Size(width, height, frames)


@dataclass(frozen=True)
class Config:
    """One compared configuration of a family; the engine adds BASELINE and AA itself.

    name: the row's `config` ("f2", "f2-nb", "bound"). kind: "baseline", "aa" (the baseline again, for the
    noise floor), "bound", "todo", or one of the family's own kinds (the UNets' "tome"); `BenchModel.configured`
    installs it. settings: ToDo's settings for kind "todo". has_ideal: its ideal time is defined (it acts where
    the bound acts only). balance: for a DiT, how ToDo's log-count bias reaches the kernel: "channel" (an extra
    head channel through the model's own kernel, the library's default), "mask" (an SDPA float mask) or "off"
    (the `-mask` and `-nb` rows); UNet families ignore it.
    """

    name: str
    kind: str
    settings: TodoSettings | None = None
    has_ideal: bool = False
    balance: str = "channel"


BASELINE = Config("baseline", "baseline")
AA = Config("baseline (A/A)", "aa")  # the baseline timed again in the same rotation: its spread is the noise


def todo_configs(factors: Sequence[float], kinds: set[str]) -> list[Config]:
    """The configurations every family shares, in table order: "bound", "auto" (ToDo's auto factors), and
    "f" (ToDo at each factor, on level 1 / a DiT's one level only). A family adds its own after them."""
    out: list[Config] = []
    if "bound" in kinds:
        out.append(Config("bound", "bound"))
    if "auto" in kinds:
        out.append(Config("auto", "todo", TodoSettings(), has_ideal=True))
    if "f" in kinds:
        out.extend(Config(f"f{f:g}", "todo", TodoSettings(factor=f, factor_level2=1), has_ideal=True) for f in factors)
    return out


class Applied(NamedTuple):
    """What a configuration really did, for the table, and the share of the bound's keys/values it kept
    (for its ideal time; None: no ideal, e.g. tomesd, or a ToDo row acting beyond the bound's attention)."""

    text: str
    kept: float | None = None


class BenchModel(Protocol):
    """What the engine times: a built model, its inputs and its configurations."""

    name: str
    device: torch.device
    description: str  # what was built, for the JSON and the plot: "diffusers SD1.5 UNet, width 64, fp32, batch 2"

    def inputs(self, size: Size) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) of one call at `size`."""

    def context(self) -> AbstractContextManager[Any]:
        """What every call runs inside (inference mode, autocast, ...)."""

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """One forward; its output is what the output change compares."""

    def kernel(self, kernel: str) -> AbstractContextManager[Any]:
        """Attention runs with `kernel` (one of the family's `kernels`) inside this context."""

    def cannot_run(self, config: Config) -> str | None:
        """Why `config` cannot run here (a missing package), or None: the row is listed with the reason."""

    def configured(self, config: Config) -> AbstractContextManager[Any]:
        """`config` installed inside this context (baseline and A/A: nothing); yields a handle for `applied`."""

    def applied(self, config: Config, handle: Any) -> Applied:
        """What `config` really did in the call just made inside `configured`, and the share it kept."""


@dataclass(frozen=True)
class Widths:
    """A family's `--width`: default per profile ("cuda", "cpu", "quick") and what it accepts."""

    default: Mapping[str, int]
    low: int
    high: int
    multiple: int
    meaning: str  # for --help and errors: "channel width; 320 = the real models"

    def check(self, value: int) -> bool:
        return self.low <= value <= self.high and value % self.multiple == 0


ConfigMaker = Callable[[Sequence[float], set[str]], list[Config]]


@dataclass(frozen=True)
class Family:
    """One `--models` name: how to build it, what it compares, where and at which sizes it runs by default.

    name: what `--models` takes. summary: one line for `--help`. load: `(width, device) -> BenchModel`
    (imports of optional packages go inside it). needs: `(module, install command)` pairs; when a module does
    not import, the family's rows say so. kernels: its attention kernels. profiles: the profiles whose default
    `--models` include it. sizes: its default `--sizes` per profile, where they differ from the profile's.
    configs: `(factors, kinds) -> [Config]`, its configurations of the `kinds` asked for; kinds: the kinds it
    knows (what `--configs` may name for it). parse_size: `text -> Size`, raising SizeError. widths: its
    `--width` rule.
    """

    name: str
    summary: str
    load: Callable[[int, torch.device], BenchModel]
    needs: tuple[tuple[str, str], ...] = ()
    kernels: tuple[str, ...] = KERNELS
    profiles: tuple[str, ...] = ()
    sizes: Mapping[str, str] = field(default_factory=dict)
    configs: ConfigMaker = todo_configs
    kinds: tuple[str, ...] = ("bound", "auto", "f")
    parse_size: Callable[[str], Size] = image_size
    widths: Widths = Widths({"cuda": 320, "cpu": 64, "quick": 32}, 32, 1280, 32, "channel width; 320 = the real models")


def iter_kinds(families: Sequence[Family]) -> Iterator[str]:
    """Every config kind the `families` know, each once, in their order."""
    yield from dict.fromkeys(k for fam in families for k in fam.kinds)
