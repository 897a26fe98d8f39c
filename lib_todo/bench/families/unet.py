"""The UNet families: SD1.5 and SDXL in diffusers' and A1111's `ldm` code, random weights (`unets.py`).

One UNet call (batch 2 = cond + uncond, 77 text tokens; fp16 on CUDA, fp32 on the CPU) for these
configurations (`unet_configs`):
- `bound`: the level-1 `attn1` modules (the highest-resolution self-attention) swapped for a module that returns
  zeros: the ceiling of any key/value reduction on that level.
- `auto`: ToDo with automatic factors (`lib_todo.auto_factors`).
- `f{F}`: ToDo at factor F on level 1 only; kept share 1/F^2 of the bound's keys.
- `f{F}+l2`: ToDo at factor F on level 1 and the same factor F on level 2 (as the H100 anchors' `todo_dF+l2dF`,
  so the numbers compare; SDXL keeps most self-attention on level 2); no ideal (the bound covers level 1 only).
- `tome`: tomesd 0.5 on the same level as the bound (max_downsample 1 on SD1.5, 2 on SDXL).
`auto` uses its applied level-1 factor for its ideal, so where auto also acts on level 2 its share of ideal may
exceed 100%.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...grid import level_grid
from ...layout import layout_of
from ...patch import apply as todo_apply
from ...settings import TodoSettings
from .. import unets
from ..family import Applied, BenchModel, Config, Family, Size, todo_configs
from ..kernels import attention_kernel, transformer_blocks

BATCH = 2
TOKENS = 77
PROBE_PX = 256
TOME_RATIO = 0.5
LDM_INSTALL = "pip install --no-deps stable-diffusion-sdkit==2.1.5"
KINDS = ("bound", "auto", "f", "f+l2", "tome")


def unet_configs(factors: Sequence[float], kinds: set[str]) -> list[Config]:
    """bound, auto, f{F} (level 1 only), f{F}+l2 (both levels), tome: those of `kinds`, in table order."""
    out = todo_configs(factors, kinds)
    if "f+l2" in kinds:
        out.extend(Config(f"f{f:g}+l2", "todo", TodoSettings(factor=f, factor_level2=f)) for f in factors)
    if "tome" in kinds:
        out.append(Config("tome", "tome"))
    return out


class ZeroAttention(nn.Module):
    """Stands in for an `attn1`: its output is zeros and nothing is computed."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.zeros_like(x)


@contextmanager
def level1_free(blocks: list[nn.Module]) -> Iterator[None]:
    """The bound: swap the `attn1` of `blocks` for ZeroAttention; restore after."""
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


@dataclass
class UnetModel:
    """A built UNet and what the bench needs to run it (the `BenchModel` interface of `family.py`)."""

    name: str
    unet: nn.Module
    spec: unets.UnetSpec
    device: torch.device
    level1: list[nn.Module]
    level1_ds: int
    description: str = ""
    batch: int = BATCH  # cond + uncond

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

    def inputs(self, size: Size) -> tuple[tuple, dict[str, Any]]:
        args, kwargs = unets.example_inputs(self.unet, self.name, self.batch, size.height, size.width, TOKENS)
        if self.family == "diffusers":
            kwargs["return_dict"] = False
        return args, kwargs

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        out = self.unet(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def kernel(self, kernel: str) -> Any:
        """Run attention with `kernel` ("sdpa" or "chunked") inside the returned context."""
        return attention_kernel(self.unet, self.family, kernel)

    def cannot_run(self, config: Config) -> str | None:
        """Why `config` cannot run here, or None: only tomesd may be missing."""
        if config.kind == "tome" and importlib.util.find_spec("tomesd") is None:
            return "tomesd not installed (pip install tomesd)"
        return None

    def applied(self, config: Config, handle: Any) -> Applied:
        """What `config` did ("2x/1x": factor per level) and, for a row with an ideal, the share of level 1's
        keys/values it kept (1/f^2 for its level-1 factor f)."""
        if handle is not None:
            done = handle.applied
            level1 = done.get(1, 1.0)
            text = "/".join(f"{done.get(level, 1.0):g}x" for level in (1, 2))
            return Applied(text, 1.0 / level1**2 if config.has_ideal else None)
        if config.kind == "tome":
            return Applied(f"tome r{TOME_RATIO:g} /{self.level1_ds}")
        if config.kind == "bound":
            return Applied(f"L1 attn1 free ({len(self.level1)})")
        return Applied("")

    @contextmanager
    def configured(self, config: Config) -> Iterator[Any]:
        """Run the UNet with `config` installed; yields the ToDo handle for ToDo configs."""
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


def load_model(name: str, width: int, device: torch.device) -> UnetModel:
    """Build `name` at `width` (fp32 on CPU; fp16 on CUDA) and find its level-1 transformer blocks."""
    unet = unets.build(name, width=width)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    nn.Module.to(unet, device=device, dtype=dtype)  # plain Module.to: no diffusers dtype warning
    if unets.SPECS[name].family == "ldm" and hasattr(unet, "dtype"):
        unet.dtype = dtype  # the ldm UNet casts h to this before the first block
    layout = layout_of(unet, unets.SPECS[name].native_px)
    code = "A1111's ldm" if unets.SPECS[name].family == "ldm" else "diffusers"
    about = f"{name} UNet ({code}), width {width}, {'fp16' if dtype == torch.float16 else 'fp32'}, batch {BATCH}"
    model = UnetModel(name, unet, unets.SPECS[name], device, [], layout.attention_ds[0], about)
    model.level1 = probe_level1(model)
    return model


def probe_level1(model: UnetModel) -> list[nn.Module]:
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
        args, kwargs = model.inputs(Size(PROBE_PX, PROBE_PX))
        with model.context():
            model.call(args, kwargs)
    finally:
        for h in handles:
            h.remove()
    latent = PROBE_PX // 8
    tokens = math.prod(level_grid((latent, latent), model.level1_ds))
    return [b for b in blocks if seen.get(id(b)) == tokens]


def _loader(name: str) -> Callable[[int, torch.device], BenchModel]:
    def load(width: int, device: torch.device) -> BenchModel:
        return load_model(name, width, device)

    return load


def _family(name: str, summary: str, needs: tuple[tuple[str, str], ...], profiles: tuple[str, ...] = ()) -> Family:
    return Family(name, summary, _loader(name), needs, profiles=profiles, configs=unet_configs, kinds=KINDS)


DIFFUSERS = (("diffusers", "pip install diffusers"),)
LDM = (("ldm", LDM_INSTALL),)
FAMILIES = (
    _family("sd15", "SD1.5 UNet (diffusers)", DIFFUSERS, ("cuda", "cpu", "quick")),
    _family("sdxl", "SDXL UNet (diffusers)", DIFFUSERS, ("cuda",)),
    _family("ldm-sd15", "SD1.5 UNet (A1111's ldm)", LDM, ("cuda",)),
    _family("ldm-sdxl", "SDXL-like UNet (A1111's ldm, one block per level)", LDM),
)
