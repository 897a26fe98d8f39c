"""Shared helpers of the core tests: real small UNets, their outputs, hook checks and independent references.

The references here never call lib_todo's downsampling or hooks: they use F.interpolate and plain matmuls.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lib_todo.bench import unets  # noqa: E402

WIDTH = 32
CONTEXT_KW = {"ldm": "context", "diffusers": "encoder_hidden_states"}


def family(name: str) -> str:
    return unets.SPECS[name].family


def build(name: str, seed: int = 0) -> nn.Module:
    """A fresh small real UNet (each test mutates hooks, so none is shared)."""
    return unets.build(name, width=WIDTH, seed=seed)


def inputs(unet: nn.Module, name: str, latent_h: int, latent_w: int, batch: int = 2) -> tuple[tuple, dict]:
    """UNet inputs for a latent of `latent_h x latent_w` (8x that in pixels), with a short text context."""
    return unets.example_inputs(unet, name, batch, latent_h * 8, latent_w * 8, tokens=8)


def setup(name: str, latent: tuple[int, int] = (16, 16), batch: int = 2) -> tuple[nn.Module, tuple, dict]:
    """A fresh small UNet and its inputs for a latent of `latent` (h, w)."""
    unet = build(name)
    return (unet, *inputs(unet, name, *latent, batch=batch))


def run(unet: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """One UNet call under no_grad, as a tensor for ldm and diffusers alike."""
    with torch.no_grad():
        out = unet(*args, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.sample


def transformer_block_classes() -> tuple[type, ...]:
    from diffusers.models.attention import BasicTransformerBlock as DiffusersBlock
    from ldm.modules.attention import BasicTransformerBlock as LdmBlock

    return LdmBlock, DiffusersBlock


def attn1_modules(unet: nn.Module) -> list[nn.Module]:
    """Every self-attention (attn1) of the UNet, found by the real block classes (subclasses too)."""
    classes = transformer_block_classes()
    return [m.attn1 for m in unet.modules() if isinstance(m, classes)]


def pre_hook_count(unet: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) for m in unet.modules())


def assert_no_hooks(unet: nn.Module) -> None:
    import lib_todo

    assert not lib_todo.has_hooks(unet)
    hooked = [type(m).__name__ for m in unet.modules() if m._forward_pre_hooks or m._forward_pre_hooks_with_kwargs]
    assert hooked == [], f"modules still carrying forward pre-hooks: {hooked}"


def ceil_div(a: int, f: float) -> int:
    return max(1, math.ceil(a / f - 1e-9))


def grid_after(hw: tuple[int, int], ds: int) -> tuple[int, int]:
    """A level's grid computed independently: each stride-2 conv (padding 1, kernel 3) rounds up."""
    h, w = hw
    for _ in range(int(math.log2(ds))):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return h, w


def interpolate_tokens(x: torch.Tensor, h: int, w: int, size: tuple[int, int], mode: str = "nearest-exact"):
    """Reference downsampling: tokens (B, h*w, C) on a row-major grid -> F.interpolate -> tokens (B, M, C)."""
    b, _, c = x.shape
    planes = x.transpose(1, 2).reshape(b, c, h, w)
    return F.interpolate(planes, size=size, mode=mode).flatten(2).transpose(1, 2)


def manual_attention(attn: nn.Module, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax attention written out with the module's own projections (ldm or diffusers)."""
    q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
    heads = attn.heads
    b, n, d = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = (q @ k.transpose(-1, -2) * (d // heads) ** -0.5).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return attn.to_out(out) if isinstance(attn.to_out, nn.Sequential) else attn.to_out[0](out)


@contextmanager
def reference_todo(unet: nn.Module, name: str, latent_hw: tuple[int, int], ds: int, factor: int) -> Iterator[None]:
    """ToDo done independently: attn1 calls whose tokens fill the level-`ds` grid get keys/values from
    F.interpolate(nearest-exact) of their own input, via our own pre-hooks (lib_todo is not used)."""
    h, w = grid_after(latent_hw, ds)
    size = (ceil_div(h, factor), ceil_div(w, factor))
    key = CONTEXT_KW[family(name)]

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        x = args[0]
        if x.shape[1] != h * w:
            return None
        kwargs[key] = interpolate_tokens(x, h, w, size)
        return args, kwargs

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in attn1_modules(unet)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def kv_capture(unet: nn.Module) -> Iterator[list[tuple[int, int]]]:
    """Records (query tokens, key/value tokens) of every attn1 call, read from what to_q and to_k receive."""
    calls: list[tuple[int, int]] = []
    pending: dict[int, int] = {}
    handles = []
    for attn in attn1_modules(unet):

        def on_q(module: nn.Module, args: tuple, key: int = id(attn)) -> None:
            pending[key] = args[0].shape[1]

        def on_k(module: nn.Module, args: tuple, key: int = id(attn)) -> None:
            calls.append((pending.pop(key), args[0].shape[1]))

        handles.append(attn.to_q.register_forward_pre_hook(on_q))
        handles.append(attn.to_k.register_forward_pre_hook(on_k))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def raising_forward_hook(module: nn.Module, exc: Exception) -> Iterator[None]:
    def boom(*_: Any) -> None:
        raise exc

    handle = module.register_forward_hook(boom)
    try:
        yield
    finally:
        handle.remove()


def hypertile_like(attn: nn.Module, h: int, w: int) -> Callable:
    """A HyperTile-style instance wrapper: attn1.forward = wrapper that runs the original on 2x2 tiles."""
    original = attn.forward  # the bound class forward

    def wrapper(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x.shape[1] != h * w or h % 2 or w % 2:
            return original(x, *args, **kwargs)
        b, _, c = x.shape
        tiles = x.reshape(b, 2, h // 2, 2, w // 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b * 4, h * w // 4, c)
        out = original(tiles, *args, **kwargs)
        c2 = out.shape[-1]
        return out.reshape(b, 2, 2, h // 2, w // 2, c2).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, c2)

    return wrapper


class LdmHolder(nn.Module):
    """What tomesd.apply_patch expects of an ldm model: `.model.diffusion_model`."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = unet


def attn1_seeing(unet: nn.Module, args: tuple, kwargs: dict, tokens: int) -> list[nn.Module]:
    """The attn1 modules that are called with `tokens` query tokens in one UNet call."""
    seen: list[nn.Module] = []

    def hook(module: nn.Module, hook_args: tuple) -> None:
        if hook_args and hook_args[0].shape[1] == tokens and module not in seen:
            seen.append(module)

    handles = [m.register_forward_pre_hook(hook) for m in attn1_modules(unet)]
    try:
        run(unet, args, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@contextmanager
def sdp_cross_attention() -> Iterator[None]:
    """A1111-style attention optimisation: ldm's CrossAttention.forward swapped at class level for SDPA."""
    from ldm.modules.attention import CrossAttention

    def sdp_forward(self: nn.Module, x: torch.Tensor, context: Any = None, mask: Any = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, heads = q.shape[0], self.heads
        q, k, v = (t.reshape(b, t.shape[1], heads, t.shape[2] // heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, out.shape[2], -1))

    saved = CrossAttention.forward
    CrossAttention.forward = sdp_forward
    try:
        yield
    finally:
        CrossAttention.forward = saved


def assert_level1_matches_manual_attention(
    unet: nn.Module, args: tuple, kwargs: dict, settings, hw: tuple[int, int], ds: int, least: int
) -> None:
    """Each level-1 attn1 output under ToDo (factor 2) equals attention written out by hand with keys and
    values from F.interpolate(nearest-exact) of its input, and differs from full attention."""
    import lib_todo

    h, w = grid_after(hw, ds)
    records = []

    def record(module, hook_args, hook_kwargs, out):
        if hook_args[0].shape[1] == h * w:
            records.append((module, hook_args[0].clone(), out.clone()))

    handles = [m.register_forward_hook(record, with_kwargs=True) for m in attn1_modules(unet)]
    try:
        with lib_todo.patched(unet, settings):
            run(unet, args, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    assert len(records) >= least
    with torch.no_grad():
        for module, x, out in records:
            kv = interpolate_tokens(x, h, w, (h // 2, w // 2))
            assert torch.allclose(out, manual_attention(module, x, kv), atol=1e-5, rtol=1e-4)
            assert not torch.allclose(out, manual_attention(module, x, x), atol=1e-4)
