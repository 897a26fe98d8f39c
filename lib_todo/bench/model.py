"""A built UNet and what the bench needs to run it: inputs, context, kernels, configurations, level 1.

`UnetModel` is the reference `BenchModel` (see `registry.py`) for the UNets of `unets.py`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..grid import level_grid
from ..layout import layout_of
from ..patch import apply as todo_apply
from . import unets
from .kernels import attention_kernel, transformer_blocks
from .variants import TOME_RATIO, Config, level1_free, tome_patch

BATCH = 2
TOKENS = 77
PROBE_PX = 256


@dataclass
class UnetModel:
    """A built UNet and what the bench needs to run it (the `BenchModel` interface of `registry.py`)."""

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

    def kernel(self, kernel: str) -> Any:
        """Run attention with `kernel` ("sdpa" or "chunked") inside the returned context."""
        return attention_kernel(self.unet, self.family, kernel)

    def cannot_run(self, config: Config) -> str | None:
        """Why `config` cannot run here, or None: only tomesd may be missing."""
        if config.kind == "tome" and importlib.util.find_spec("tomesd") is None:
            return "tomesd not installed (pip install tomesd)"
        return None

    def applied(self, config: Config, handle: Any) -> tuple[str, float]:
        """What `config` did, for the table ("2x/1x": factor per level), and its level-1 factor."""
        if handle is not None:
            done = handle.applied
            return "/".join(f"{done.get(level, 1.0):g}x" for level in (1, 2)), done.get(1, 1.0)
        if config.kind == "tome":
            return f"tome r{TOME_RATIO:g} /{self.level1_ds}", 1.0
        if config.kind == "bound":
            return f"L1 attn1 free ({len(self.level1)})", 1.0
        return "", 1.0

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


def load_model(name: str, width: int, device: torch.device) -> UnetModel:
    """Build `name` at `width` (fp32 on CPU; fp16 on CUDA) and find its level-1 transformer blocks."""
    unet = unets.build(name, width=width)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    nn.Module.to(unet, device=device, dtype=dtype)  # plain Module.to: no diffusers dtype warning
    if unets.SPECS[name].family == "ldm" and hasattr(unet, "dtype"):
        unet.dtype = dtype  # the ldm UNet casts h to this before the first block
    layout = layout_of(unet, unets.SPECS[name].native_px)
    model = UnetModel(name, unet, unets.SPECS[name], device, [], layout.attention_ds[0])
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
        args, kwargs = model.inputs(PROBE_PX, PROBE_PX)
        with model.context():
            model.call(args, kwargs)
    finally:
        for h in handles:
            h.remove()
    latent = PROBE_PX // 8
    tokens = math.prod(level_grid((latent, latent), model.level1_ds))
    return [b for b in blocks if seen.get(id(b)) == tokens]
