"""The Flux family: diffusers' Flux blocks and transformer with random weights, bf16, batch 1.

- `flux-double` / `flux-single`: one double block (`FluxTransformerBlock`) / one single block
  (`FluxSingleTransformerBlock`) at full width (hidden 3072, 24 heads of 128; `--width` = heads x 128), 512 text
  tokens, RoPE from Flux's own position embedding: the CPU's Flux rows.
- `flux`: the whole `FluxTransformer2DModel` at Flux.1-dev's config (19 double + 38 single blocks), built on the
  device in bf16 (about 24 GB at full width): the GPU's Flux rows. UNTESTED ON A GPU so far.

Configurations: those of every DiT (`dit.py`): bound (text keys only), auto, f{F} (balanced), f{F}-nb (balance
off); ideal `base - (1 - M/N) * (base - bound)` for M kept of N image keys. The output change is that of the image
tokens' output for smooth image inputs (`dit.smooth_tokens`).

Every use of lib_todo's internals (the DiT engine on a lone block, the joint attention functions) is in
`dit.DitTodoAdapter`, which every DiT family of the bench shares: the one place to re-point when the backend
changes. A lone block has no transformer forward whose pre-hook would read `img_ids`, so the adapter tells the DiT
engine the call itself (text length, image grid) and scopes the block's `attn` as text-first joint attention, as
the Flux family does for every block of a transformer; ToDo then runs through the block's own
`dispatch_attention_fn` (the user's kernel), the bias in the way `balance` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ..family import Applied, BenchModel, Config, Family, Size, Widths, image_size
from . import dit

HEAD_DIM = 128
HEADS = 24
HIDDEN = HEADS * HEAD_DIM  # 3072
TEXT_TOKENS = 512
ROPE_AXES = (16, 56, 56)
PATCH_PX = 16  # 8 (VAE) x 2 (patchify)


@dataclass
class FluxModel:
    """A built Flux block or transformer: the `BenchModel` of the Flux family."""

    name: str
    module: nn.Module
    kind: str  # "double", "single" or "transformer"
    device: torch.device
    dtype: torch.dtype
    width: int
    attns: list[nn.Module] = field(default_factory=list)
    description: str = ""
    todo: type[dit.DitTodoAdapter] = dit.DitTodoAdapter
    shape: tuple[int, tuple[int, int]] = (TEXT_TOKENS, (1, 1))  # (text tokens, image grid) of the last inputs

    def inputs(self, size: Size) -> tuple[tuple, dict[str, Any]]:
        """kwargs of one call for a `size.width x size.height` image: latent 1/8, patch grid 1/16 (rounded up)."""
        h, w = (-(-(side // 8) // 2) for side in (size.height, size.width))
        g = torch.Generator().manual_seed(size.width * 7919 + h)
        txt_ids, img_ids = torch.zeros(TEXT_TOKENS, 3), dit.grid_ids(h, w)
        if self.kind == "transformer":
            cfg = self.module.config
            kwargs = {
                "hidden_states": dit.smooth_tokens(h, w, cfg.in_channels, g),
                "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, cfg.joint_attention_dim, generator=g),
                "pooled_projections": torch.randn(1, cfg.pooled_projection_dim, generator=g),
                "timestep": torch.tensor([0.5]),
                "img_ids": img_ids,
                "txt_ids": txt_ids,
                "return_dict": False,
            }
            if cfg.guidance_embeds:
                kwargs["guidance"] = torch.tensor([3.5])
        else:
            from diffusers.models.transformers.transformer_flux import FluxPosEmbed

            hidden = self.width
            rope = FluxPosEmbed(10000, list(ROPE_AXES))(torch.cat([txt_ids, img_ids]))
            kwargs = {
                "hidden_states": dit.smooth_tokens(h, w, hidden, g),
                "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, hidden, generator=g),
                "temb": torch.randn(1, hidden, generator=g),
                "image_rotary_emb": tuple(r.to(self.device) for r in rope),
            }
        self.shape = (TEXT_TOKENS, (h, w))
        return (), {k: _to(v, self.device, self.dtype) for k, v in kwargs.items()}

    def context(self) -> Any:
        return torch.inference_mode()

    def call(self, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        """The image tokens' output (a block returns (text, image); the transformer (sample,))."""
        out = self.module(*args, **kwargs)
        return out[0] if self.kind == "transformer" else out[1]

    def kernel(self, kernel: str) -> Any:
        return nullcontext()  # SDPA only

    def cannot_run(self, config: Config) -> str | None:
        return None

    @contextmanager
    def configured(self, config: Config) -> Iterator[Any]:
        """bound: text keys only; todo: ToDo through the adapter (yields its pass state); else nothing. The whole
        transformer takes the same path: each block's `attn` scoped, the call's shape told (one known shape)."""
        txt_len, grid = self.shape
        if config.kind == "bound":
            with self.todo.text_keys_only(self.attns, txt_len, grid):
                yield None
        elif config.kind == "todo":
            with self.todo.on_blocks(self.attns, config.settings, txt_len, grid, config.balance) as state:
                yield state
        else:
            yield None

    def applied(self, config: Config, handle: Any) -> Applied:
        if config.kind == "bound":
            return Applied(f"text keys only ({len(self.attns)} attn)")
        if config.kind != "todo" or handle is None:
            return Applied("")
        return dit.todo_applied(config, handle.applied.get(1, 1.0), handle.calls, len(self.attns), self.shape[1])


def _to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Tensors to `device`; floating ones to `dtype` too, except position ids (kept in fp32)."""
    if isinstance(value, torch.Tensor):
        is_ids = value.dim() == 2 and value.shape[-1] == 3
        return value.to(device) if is_ids or not value.is_floating_point() else value.to(device, dtype)
    return value


def build_block(kind: str, width: int, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> FluxModel:
    """One double or single block, hidden `width` (heads of 128), random weights (seed 0)."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    torch.manual_seed(0)
    cls = FluxTransformerBlock if kind == "double" else FluxSingleTransformerBlock
    block = cls(width, width // HEAD_DIM, HEAD_DIM).to(device=device, dtype=dtype).eval()
    about = f"Flux {kind} block (diffusers), hidden {width}, {_heads(width)}, {_name(dtype)}, batch 1"
    return FluxModel(f"flux-{kind}", block, kind, device, dtype, width, [block.attn], about)


def build_transformer(width: int, device: torch.device, dtype: torch.dtype = torch.bfloat16, **config: Any):
    """The whole FluxTransformer2DModel (Flux.1-dev's config unless `config` says otherwise), random weights,
    built on `device` directly in `dtype`. Refused on the CPU at full width (about 24 GB of weights)."""
    from diffusers import FluxTransformer2DModel

    if device.type == "cpu" and width >= HIDDEN and not config:
        raise MemoryError("the whole Flux transformer at full width needs a GPU; on the CPU run flux-double and "
                          "flux-single, or the whole model at a small --width")  # fmt: skip
    torch.manual_seed(0)
    config = {"guidance_embeds": True, "num_attention_heads": width // HEAD_DIM, **config}
    saved = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)  # built in `dtype`: no full-precision copy at the peak
        with torch.device(device):
            model = FluxTransformer2DModel(**config).eval()
    finally:
        torch.set_default_dtype(saved)
    attns = [b.attn for b in [*model.transformer_blocks, *model.single_transformer_blocks]]
    blocks = f"{len(model.transformer_blocks)} double + {len(model.single_transformer_blocks)} single blocks"
    about = f"Flux transformer (diffusers), {blocks}, hidden {width}, {_name(dtype)}, batch 1"
    return FluxModel("flux", model, "transformer", device, dtype, width, attns, about)


def _heads(width: int) -> str:
    heads = width // HEAD_DIM
    return f"{heads} head{'' if heads == 1 else 's'} of {HEAD_DIM}"


def _name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _load(kind: str, width: int, device: torch.device) -> BenchModel:
    return build_transformer(width, device) if kind == "transformer" else build_block(kind, width, device)


WIDTHS = Widths(
    {"cuda": HIDDEN, "cpu": HIDDEN, "quick": HIDDEN}, HEAD_DIM, HIDDEN, HEAD_DIM,
    f"hidden size, {HEAD_DIM} per head; {HIDDEN} = Flux (24 heads)",
)  # fmt: skip
DIFFUSERS = (("diffusers", "pip install diffusers"),)


def _family(name: str, kind: str, summary: str, sizes: dict[str, str]) -> Family:
    load: Callable[[int, torch.device], BenchModel] = partial(_load, kind)
    return Family(
        name, summary, load, DIFFUSERS, kernels=("sdpa",), sizes=sizes, configs=dit.dit_configs, kinds=dit.KINDS,
        parse_size=partial(image_size, multiple=PATCH_PX), widths=WIDTHS,
    )  # fmt: skip


BLOCK_SIZES = {"cuda": "1024,1536,2048", "cpu": "1024", "quick": "256"}
FAMILIES = (
    _family("flux-double", "double", "Flux double block, full width, bf16 (diffusers)", BLOCK_SIZES),
    _family("flux-single", "single", "Flux single block, full width, bf16 (diffusers)", BLOCK_SIZES),
    _family("flux", "transformer", "Flux.1-dev transformer, random weights, bf16 (diffusers; GPU, untested)",
            {"cuda": "1024,1536,2048", "cpu": "1024", "quick": "256"}),
)  # fmt: skip
