"""Parts the Forge Neo stand-ins (Anima, Ernie-Image, Krea 2, Wan, NextDiT) share, small and in our words.

- `attention_function`: backend/attention.py's kernel, the hosts' one stand-in of it (stub_flux/attention.py,
  its signature and layouts described there). Each stand-in imports it into its own module globals, as Neo's
  model files do.
- `KModel`: backend/modules/k_model.py's `apply_model`, the part ToDo sees: the network is called with the latent,
  the timestep, `context=c_crossattn`, `transformer_options`, and every other cond as a keyword argument.
- RoPE: angles per token from integer positions on a few axes; split-half rotation (comfy-kitchen's
  `apply_rope_split_half`: channel i turns with channel i + D/2) and pairwise rotation (Flux's `apply_rope`:
  channel 2i with 2i + 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from stub_flux.attention import attention_function  # noqa: F401 - the stand-ins import it from here
from torch import nn


class KModel(nn.Module):
    """The network inside a Neo UNet patcher (`patcher.model.diffusion_model`) and how Neo calls it."""

    def __init__(self, diffusion_model: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **conds: Any) -> torch.Tensor:
        return self.diffusion_model(x, t, context=c_crossattn, transformer_options=transformer_options or {}, **conds)


def neo_patcher(network: nn.Module) -> Any:
    """A Neo UNet patcher (tests/webui_stub/stub_models.py, Neo's clone) around `network`."""
    import stub_models

    return stub_models.UnetPatcher(KModel(network), "neo")


def call_patcher(patcher: Any, x: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
    """One model call as Neo's sampling function makes it: through `model_function_wrapper` when one is set."""
    wrapper = patcher.model_options.get("model_function_wrapper")
    if wrapper is None:
        return patcher.model.apply_model(x, t, **c)
    return wrapper(patcher.model.apply_model, {"input": x, "timestep": t, "c": c, "cond_or_uncond": [0]})


def angles(positions: torch.Tensor, sizes: list[int], theta: float) -> torch.Tensor:
    """Rotation angles (L, sum(sizes)): for each axis a of positions (L, axes), sizes[a] frequencies."""
    parts = []
    for axis, n in enumerate(sizes):
        freqs = theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1))
        parts.append(positions[:, axis : axis + 1].double() * freqs)
    return torch.cat(parts, dim=-1).float()


def rotate_split_half(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """x (..., D) turned by angles `turn` broadcastable to (..., D/2): channel i with channel i + D/2."""
    a, b = x.chunk(2, dim=-1)
    cos, sin = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rotate_pairs(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """x (..., D) turned by angles `turn` broadcastable to (..., D/2): channel 2i with channel 2i + 1."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = turn.cos().to(x.dtype), turn.sin().to(x.dtype)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (B, dim) of timesteps (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def grid_positions(frames: int, h: int, w: int, frame0: float = 0.0) -> torch.Tensor:
    """(frames*h*w, 3) positions (frame, row, column), row-major."""
    t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([t + frame0, r, c], dim=-1).reshape(-1, 3).float()
