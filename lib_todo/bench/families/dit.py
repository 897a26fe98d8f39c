"""What the DiT families of the bench share: their configurations, their kept share, smooth inputs, the one adapter
to lib_todo's internals, and the BenchModel of a whole diffusers transformer.

A DiT block attends over one joint sequence: text (or caption) tokens and the image tokens of a `h x w` patch
grid (per frame for video). Its configurations (`dit_configs`): `bound`, the image keys costing nothing (every
query attends to the text keys only, or to one key where there is no text: Wan's and Anima's image-only
self-attention; every projection and MLP still runs: no reduction of the image keys can beat it); `auto`; `f{F}`,
ToDo at factor F with balance (the bias in an extra head channel, through the model's own kernel: what users run);
`f{F}-mask`, the bias in an SDPA float mask instead (a mask keeps SDPA off its flash kernel on a GPU); `f{F}-nb`,
without balance. The ideal time of a ToDo row keeps M of the N image keys: `base - (1 - M/N) * (base - bound)`
(`kept_share`).

Every use of lib_todo's internals by the bench (the DiT engine, its families, the joint attention functions) is in
`DitTodoAdapter`: the one place to re-point when the backend changes. The families of whole diffusers
transformers (`qwen.py`, `lumina.py`, `wan.py`, `anima.py`, `ernie.py`, `krea.py`) build a `DitTransformer`: the
model from its published config (`build`: one main block, fp32, on the CPU; the whole depth, bf16, on CUDA), ToDo
installed as a user installs it (`lib_todo.patched`), the bound through the engine's `BoundCall`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...grid import downsampled_grid
from ...settings import TodoSettings
from ..family import Applied, BenchModel, Config, Family, Size, Widths, todo_configs

KINDS = ("bound", "auto", "f", "f-mask", "f-nb")
BALANCE_ROWS = {"f-mask": ("-mask", "mask"), "f-nb": ("-nb", "off")}  # kind: (name suffix, balance)
HEAD_DIM = 128  # every family here but Lumina 2 (96)


def dit_configs(factors: Sequence[float], kinds: set[str]) -> list[Config]:
    """bound, auto, f{F} (the bias in a head channel, through the model's kernel), then f{F}-mask (the bias in an
    SDPA mask) and f{F}-nb (balance off) per factor: those of `kinds`, in table order."""
    out = todo_configs(factors, kinds)
    balanced = todo_configs(factors, {"f"})
    for kind, (suffix, balance) in BALANCE_ROWS.items():
        if kind in kinds:
            out.extend(Config(c.name + suffix, "todo", c.settings, has_ideal=True, balance=balance) for c in balanced)
    return out


def kept_share(grid: tuple[int, int], factor: float) -> float:
    """M/N: the image keys ToDo keeps at `factor` on an `h x w` grid (cells at the border are smaller), 1 when off.
    Per frame for video (cells are 1 x f x f), so the share of a frame is the share of the video."""
    if factor <= 1.0:
        return 1.0
    return math.prod(downsampled_grid(*grid, factor)) / math.prod(grid)


def todo_applied(config: Config, factor: float, calls: int, attns: int, grid: tuple[int, int]) -> Applied:
    """The table's words for a ToDo row of a DiT ("2x balanced (6/6 calls)") and its kept share of image keys."""
    if factor <= 1.0:
        return Applied(f"not downsampled (0/{attns} calls)", 1.0)
    how = {"channel": "balanced (bias channel)", "mask": "balanced (bias mask)"}.get(config.balance, "no balance")
    return Applied(f"{factor:g}x {how} ({calls}/{attns} calls)", kept_share(grid, factor))


def smooth_field(frames: int, channels: int, h: int, w: int, g: torch.Generator, coarse: int = 8) -> torch.Tensor:
    """(frames, C, h, w), as latents are far from white noise: a random field on a grid `coarse` times coarser,
    bilinearly upsampled, normalised, plus 10% white noise."""
    low = torch.randn(frames, channels, max(1, h // coarse), max(1, w // coarse), generator=g)
    field = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return field / field.std() + 0.1 * torch.randn(frames, channels, h, w, generator=g)


def smooth_tokens(h: int, w: int, channels: int, g: torch.Generator, frames: int = 1) -> torch.Tensor:
    """(1, frames*h*w, C) tokens of a smooth field on the token grid (`smooth_field`, 8x coarser); frames
    row-major (frame, row, column)."""
    field = smooth_field(frames, channels, h, w, g)
    return field.flatten(2).transpose(1, 2).reshape(1, frames * h * w, channels).contiguous()


def smooth_latent(channels: int, frames: int, h: int, w: int, g: torch.Generator, patch: int = 2) -> torch.Tensor:
    """(C, frames, h, w): the latent equivalent of `smooth_tokens`, a field as smooth per token (8 tokens of
    `patch` x `patch` latent pixels per coarse cell)."""
    return smooth_field(frames, channels, h, w, g, coarse=8 * patch).transpose(0, 1).contiguous()


def grid_ids(h: int, w: int) -> torch.Tensor:
    """(h*w, 3) position ids [0, row, col], row-major: Flux's and Krea 2's image ids."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


class DitTodoAdapter:
    """How the bench installs ToDo and its bound on a DiT, and the other lib_todo internals its rows and studies
    call. Nothing else in the bench imports `lib_todo.backends` or `lib_todo.joint_attention`; re-point these
    methods when they change.

    A whole diffusers transformer (any family of `lib_todo.backends.DIT_FAMILIES`): ToDo as a user installs it
    (`on_model`: `lib_todo.patched`), the bound through the same per-forward hooks with the engine's `BoundCall`
    in place of ToDo (`bound`). A lone block (Flux's) has no transformer forward whose pre-hook would read the
    call, so the bench tells the engine the call itself (`DitCall`: text length, image grid) and scopes the
    block's attention as text-first joint attention (`on_blocks`, `text_keys_only`).
    """

    @staticmethod
    def on_model(model: nn.Module, settings: TodoSettings, balance: str) -> AbstractContextManager[Any]:
        """ToDo on a whole transformer as a user installs it (`lib_todo.patched`), the bias "channel" (the
        library's default), "mask" or "off"; yields the handle (`.state.calls`, `.applied`)."""
        from ... import patched

        return patched(model, settings, balance=balance)

    @staticmethod
    @contextmanager
    def bound(model: nn.Module) -> Iterator[Any]:
        """The bound on a whole diffusers transformer: in every attention call ToDo would downsample, every query
        attends to the keys outside the target image only (one image key where there are none). Yields the pass
        state; its `calls` counts the calls the bound took."""
        from ...backends import dit, dit_diffusers
        from ...plan import TodoPlan
        from ...state import PassState

        family = DitTodoAdapter._family(model)
        state = PassState(TodoPlan(TodoSettings(factor=1), family.layout()))
        handles = dit_diffusers.install(model, family, state, active=DitTodoAdapter._counted(dit.BoundCall))
        try:
            yield state
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _counted(bound: type) -> type:
        """The engine's BoundCall counting the calls it took in the pass state (the engine counts only ToDo's
        own), so the bound row says where it acted."""

        class Counted(bound):  # type: ignore[misc, valid-type]
            def attend(self, request: Any, original: Callable) -> Any:
                out = super().attend(request, original)
                if out is not None:
                    self.state.calls += 1
                return out

        return Counted

    @staticmethod
    def scoped(model: nn.Module) -> int:
        """How many attention modules of `model` ToDo scopes (the calls it may downsample per forward)."""
        from ...backends import dit

        return len(dit.installation(DitTodoAdapter._family(model), model).scopes)

    @staticmethod
    def family_name(model: nn.Module) -> str:
        """The family lib_todo serves `model` as ("Qwen-Image", "Z-Image", ...)."""
        return DitTodoAdapter._family(model).name

    @staticmethod
    def _family(model: nn.Module) -> Any:
        from ... import backends

        family = backends.dit_family(model, "diffusers")
        if family is None:
            raise TypeError(f"{type(model).__name__} is no DiT family lib_todo serves in diffusers")
        return family

    @staticmethod
    @contextmanager
    def on_blocks(
        attns: list[nn.Module], settings: TodoSettings, txt_len: int, grid: tuple[int, int], balance: str,
        family: str = "Flux",
    ) -> Iterator[Any]:  # fmt: skip
        """ToDo on the lone blocks' attention modules `attns` of a text-first joint sequence (`txt_len` text
        tokens, an `h x w` image grid) of the diffusers `family`, for the calls inside; yields the pass state
        (`.applied` {1: factor}, `.calls`)."""
        from ...backends import dit
        from ...plan import TodoPlan
        from ...state import PassState

        fam = DitTodoAdapter._named(family)
        state = PassState(TodoPlan(settings, fam.layout()))
        scopes = DitTodoAdapter._block_scopes(fam, attns)
        with dit.call_scope(scopes, dit.ActiveCall(DitTodoAdapter._block_call(txt_len, grid), state, balance)):
            yield state

    @staticmethod
    @contextmanager
    def text_keys_only(
        attns: list[nn.Module], txt_len: int, grid: tuple[int, int], family: str = "Flux"
    ) -> Iterator[None]:
        """The bound of lone blocks: every query of `attns` (`txt_len` text tokens, then an `h x w` image grid)
        attends to the text keys/values only."""
        from ...backends import dit
        from ...plan import TodoPlan
        from ...state import PassState

        fam = DitTodoAdapter._named(family)
        state = PassState(TodoPlan(TodoSettings(factor=1), fam.layout()))
        call = DitTodoAdapter._block_call(txt_len, grid)
        with dit.call_scope(DitTodoAdapter._block_scopes(fam, attns), dit.BoundCall(call, state)):
            yield

    @staticmethod
    def _named(name: str) -> Any:
        """The diffusers DitFamily called `name`."""
        from ... import backends

        return next(f for f in backends.DIT_FAMILIES if f.host == "diffusers" and f.name == name)

    @staticmethod
    def _block_call(txt_len: int, grid: tuple[int, int]) -> Any:
        """What the engine needs of one call of a lone block: the text length and the image grid."""
        from ...backends.dit import DitCall
        from ...joint_attention import ImageGrid

        return DitCall(ImageGrid(1, *grid), txt_len)

    @staticmethod
    def _block_scopes(family: Any, attns: list[nn.Module]) -> Any:
        """The engine's installation over the modules `attns`, each scoped as text-first joint attention."""
        from ...backends import dit

        return dit.installation(family, attns[0], [(a, dit.text_then_image) for a in attns])

    @staticmethod
    def joint_attention(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, txt_len: int, grid: tuple[int, int], factor: float,
        balance: bool,
    ) -> torch.Tensor:  # fmt: skip
        """ToDo's joint attention alone, text first, (B, heads, L, D) after RoPE -> (B, heads, L, D)."""
        from ...joint_attention import joint_attention

        return joint_attention(q, k, v, txt_len, grid, factor, balance=balance)

    @staticmethod
    def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """SDPA with the per-key balance bias (S,) as an additive float mask: how ToDo adds it on the CPU."""
        from ...joint_attention import biased_attention

        return biased_attention(q, k, v, bias)


# Whole diffusers transformers: one main block on the CPU, the whole depth on CUDA.

InputMaker = Callable[[nn.Module, Size, torch.Generator], tuple[dict[str, Any], tuple[int, int]]]


@dataclass
class DitTransformer:
    """A built diffusers DiT transformer: the `BenchModel` of the DiT families other than Flux.

    inputs_for(module, size, g) -> (forward kwargs on the CPU in fp32, the target's per-frame token grid (h, w)).
    bound_words: what the bound does, for the table ("text keys only", "one image key").
    """

    name: str
    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    description: str
    inputs_for: InputMaker
    bound_words: str = "text keys only"
    todo: type[DitTodoAdapter] = DitTodoAdapter
    grid: tuple[int, int] = (1, 1)  # per-frame token grid of the last inputs
    attns: int = field(init=False)

    def __post_init__(self) -> None:
        self.attns = self.todo.scoped(self.module)

    def inputs(self, size: Size) -> tuple[tuple, dict[str, Any]]:
        g = torch.Generator().manual_seed(size.width * 7919 + size.height * 31 + size.frames)
        kwargs, self.grid = self.inputs_for(self.module, size, g)
        return (), {k: _to(v, self.device, self.dtype, k) for k, v in kwargs.items()}

    def context(self) -> Any:
        return torch.inference_mode()

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """The denoised sample (Z-Image returns a list of per-item samples: the first)."""
        out = self.module(*args, **kwargs, return_dict=False)[0]
        return out[0] if isinstance(out, (list, tuple)) else out

    def kernel(self, kernel: str) -> Any:
        return nullcontext()  # the model's own attention (SDPA through diffusers' dispatch)

    def cannot_run(self, config: Config) -> str | None:
        return None

    @contextmanager
    def configured(self, config: Config) -> Iterator[Any]:
        """bound: the engine's BoundCall (yields its pass state); todo: `lib_todo.patched` (yields the handle)."""
        if config.kind == "bound":
            with self.todo.bound(self.module) as state:
                yield state
        elif config.kind == "todo":
            with self.todo.on_model(self.module, config.settings, config.balance) as handle:
                yield handle
        else:
            yield None

    def applied(self, config: Config, handle: Any) -> Applied:
        if config.kind == "bound":
            return Applied(f"{self.bound_words} ({handle.calls}/{self.attns} calls)")
        if config.kind != "todo" or handle is None:
            return Applied("")
        return todo_applied(config, handle.applied.get(1, 1.0), handle.state.calls, self.attns, self.grid)


def _to(value: Any, device: torch.device, dtype: torch.dtype, key: str = "") -> Any:
    """Tensors (also in lists) to `device`; floating ones to `dtype` too, except position ids (kept in fp32)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device, dtype, key) for v in value)
    if isinstance(value, torch.Tensor):
        keep = "ids" in key or not value.is_floating_point()
        return value.to(device) if keep else value.to(device, dtype)
    return value


@dataclass(frozen=True)
class Published:
    """A family's published transformer config and how the bench scales it to `--width`.

    cls: the diffusers class name. config: the published config (the model's own config.json). width_key: the
    config key of the hidden size, or None where it is heads x head dim; heads_key, kv_key: the query and
    key/value head counts (kv_key None: no grouped heads); head_dim: per head. scaled: config keys that scale with
    the width (MLP sizes). depth: {config key: (CPU value, CUDA value: the published depth)} per block list.
    """

    cls: str
    config: Mapping[str, Any]
    heads_key: str
    head_dim: int = HEAD_DIM
    width_key: str | None = None
    kv_key: str | None = None
    scaled: tuple[str, ...] = ()
    depth: Mapping[str, int] = field(default_factory=dict)  # key: the CPU's depth (CUDA: the published one)

    @property
    def width(self) -> int:
        return self.config[self.heads_key] * self.head_dim

    def at(self, width: int, full_depth: bool) -> dict[str, Any]:
        """The config at hidden size `width` (heads of `head_dim`), one main block (and the fewest refiner or
        text-fusion blocks: `depth`) unless `full_depth`."""
        config = dict(self.config)
        heads = width // self.head_dim
        config[self.heads_key] = heads
        if self.width_key:
            config[self.width_key] = width
        if self.kv_key:
            kv = max(1, heads * self.config[self.kv_key] // self.config[self.heads_key])
            while heads % kv:
                kv -= 1
            config[self.kv_key] = kv
        for key in self.scaled:
            config[key] = max(self.head_dim, round(self.config[key] * width / self.width / 16) * 16)
        if not full_depth:
            config.update(self.depth)
        return config


def build(spec: Published, width: int, device: torch.device, dtype: torch.dtype, full_depth: bool) -> nn.Module:
    """The diffusers class of `spec` at `width`, built on `device` directly in `dtype` (no full-precision copy at
    the peak), every parameter drawn anew (`randomise`, seed 0), in eval mode."""
    import diffusers

    cls = getattr(diffusers, spec.cls)
    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = cls(**spec.at(width, full_depth))
    finally:
        torch.set_default_dtype(saved)
    return randomise(model).eval()


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn anew, non-zero (diffusers starts some gates, pad tokens and output layers at zero,
    which would hide attention from the output): weights N(0, 1/fan_in), so activations keep their scale through
    the full-width layers; norm scales 1 + N(0, 0.1^2); other vectors (biases) N(0, 0.02^2)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            values = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
        elif "norm" in name or name.endswith(("weight", "scale")):
            values = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            values = 0.02 * torch.randn(p.shape, generator=g)
        p.copy_(values)
    return model


def dtype_for(device: torch.device) -> torch.dtype:
    """fp32 on the CPU (no native bf16 on AVX2-only CPUs: a bf16 matmul runs ~7x slower), bf16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def heads_text(width: int, head_dim: int = HEAD_DIM) -> str:
    heads = width // head_dim
    return f"{heads} head{'' if heads == 1 else 's'} of {head_dim}"


def load_transformer(
    name: str, spec: Published, inputs_for: InputMaker, about: str, width: int, device: torch.device,
    bound_words: str = "text keys only",
) -> BenchModel:  # fmt: skip
    """A `DitTransformer` of `spec` at `width`: one main block in fp32 on the CPU, the whole published depth in
    bf16 on CUDA. `about` names the model and its inputs for the description."""
    full = device.type == "cuda"
    dtype = dtype_for(device)
    model = build(spec, width, device, dtype, full)
    depth = ", ".join(f"{key} {model.config[key]}" for key in spec.depth)
    description = (
        f"{spec.cls} (diffusers), {'the published depth' if full else 'one main block'} ({depth}), hidden {width}, "
        f"{heads_text(width, spec.head_dim)}, {about}, {dtype_name(dtype)}, batch 1"
    )
    return DitTransformer(name, model, device, dtype, description, inputs_for, bound_words)


def dit_family(
    name: str, summary: str, spec: Published, inputs_for: InputMaker, about: str, sizes: Mapping[str, str],
    parse_size: Callable[[str], Size], quick_width: int | None = None, bound_words: str = "text keys only",
) -> Family:  # fmt: skip
    """The `Family` entry of a whole-transformer DiT: `--width` the hidden size in heads of the published head
    dim (default: the published width; --quick: one head); its configurations those of every DiT."""
    width = spec.width
    widths = Widths(
        {"cuda": width, "cpu": width, "quick": quick_width or spec.head_dim}, spec.head_dim, width, spec.head_dim,
        f"hidden size, {spec.head_dim} per head; {width} = the published model",
    )  # fmt: skip
    load = partial(load_transformer, name, spec, inputs_for, about, bound_words=bound_words)
    return Family(
        name, summary, load, (("diffusers", "pip install diffusers"),), kernels=("sdpa",), sizes=sizes,
        configs=dit_configs, kinds=KINDS, parse_size=parse_size, widths=widths,
    )  # fmt: skip


def latent_grid(size: Size, latent_px: int = 8, patch: int = 2) -> tuple[int, int]:
    """(latent h, latent w) of an image `size`: the /`latent_px` VAE latent, sides cut to the patch."""
    return (size.height // latent_px // patch * patch, size.width // latent_px // patch * patch)


def tokens(size: Size, token_px: int = 16) -> tuple[int, int]:
    """(h, w) of the token grid of an image `size` at `token_px` image pixels per token side."""
    return size.height // token_px, size.width // token_px
