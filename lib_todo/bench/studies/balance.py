"""Studies "balance" and "attention": how far ToDo moves a Flux output from full attention, with balance and without.

- balance: a small random-weight `FluxTransformer2DModel` (2 double + 4 single blocks, 4 heads of 128, fp32, the
  CPU) under `lib_todo.patched` (balance: the library's default way, or "off"), per method (nearest-exact,
  avg-pool), factor and balance on/off.
- attention: ToDo's joint attention alone against full attention: q, k, v smooth on the image grid
  (`dit.smooth_tokens`), RMS-normalised q and k as Flux's qk-norm leaves them, Flux's RoPE, 512 random text tokens.

Rows: config `f{F}` (balance on) / `f{F}-nb` (off), with ` avg-pool` appended for that method; `rel_change` =
||ToDo - full|| / ||full|| (of the transformer's output, or of the attention output); no timing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...settings import TodoSettings
from ..families import dit
from ..families.dit import DitTodoAdapter
from ..families.flux import HEAD_DIM, PATCH_PX, ROPE_AXES, TEXT_TOKENS, build_transformer
from ..family import Size
from ..measure import rel_change, row
from . import Log

HEADS = 4
METHODS = ("nearest-exact", "avg-pool")


def run(name: str, opts: Any, log: Log) -> list[dict[str, Any]]:
    sizes, factors = opts.size_list, opts.factor_list
    return transformer_rows(sizes, factors, log) if name == "balance" else attention_rows(sizes, factors, log)


def _config(factor: float, balance: bool, method: str = "nearest-exact") -> str:
    return f"f{factor:g}{'' if balance else '-nb'}{'' if method == 'nearest-exact' else ' ' + method}"


def transformer_rows(sizes: list[Size], factors: list[float], log: Log) -> list[dict[str, Any]]:
    """Output change of the small transformer's output under ToDo, per size, method, factor and balance."""
    small = {"in_channels": 64, "num_layers": 2, "num_single_layers": 4, "joint_attention_dim": 256,
             "pooled_projection_dim": 64, "guidance_embeds": False}  # fmt: skip
    case = build_transformer(HEADS * HEAD_DIM, torch.device("cpu"), torch.float32, **small)
    name = f"flux transformer ({len(case.attns)} blocks, {HEADS} heads, fp32)"
    rows = []
    with torch.inference_mode():
        for size in sizes:
            args, kwargs = case.inputs(size)
            base = case.call(args, kwargs)
            for method in METHODS:
                for f in factors:
                    for balance in (True, False):
                        settings = TodoSettings(factor=f, method=method)
                        how = "channel" if balance else "off"
                        with DitTodoAdapter.on_model(case.module, settings, how) as handle:
                            change = rel_change(case.call(args, kwargs), base)
                        calls = handle.state.calls
                        rows.append(row(name, "sdpa", size, _config(f, balance, method), rel_change=change,
                                        applied=f"{f:g}x, {calls}/{len(case.attns)} calls"))  # fmt: skip
                        log(f"  {name} {size.label} {rows[-1]['config']}: output change {change:.5f}")
    return rows


def attention_rows(sizes: list[Size], factors: list[float], log: Log) -> list[dict[str, Any]]:
    """Output change of `joint_attention` alone against full attention, per size, factor and balance."""
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    name = f"joint attention ({HEADS} heads of {HEAD_DIM}, fp32)"
    rows = []
    for size in sizes:
        h, w = size.height // PATCH_PX, size.width // PATCH_PX
        g = torch.Generator().manual_seed(size.width)
        rope = FluxPosEmbed(10000, list(ROPE_AXES))(torch.cat([torch.zeros(TEXT_TOKENS, 3), dit.grid_ids(h, w)]))
        qkv = []
        for _ in range(3):
            image = dit.smooth_tokens(h, w, HEADS * HEAD_DIM, g)
            text = torch.randn(1, TEXT_TOKENS, HEADS * HEAD_DIM, generator=g)
            qkv.append(torch.cat([text, image], dim=1).unflatten(-1, (HEADS, HEAD_DIM)))  # (1, L, heads, D)
        q, k, v = qkv
        q, k = (F.rms_norm(x, (HEAD_DIM,)) for x in (q, k))
        q, k = (apply_rotary_emb(x, rope, sequence_dim=1).transpose(1, 2) for x in (q, k))
        v = v.transpose(1, 2)
        full = F.scaled_dot_product_attention(q, k, v)
        for f in factors:
            for balance in (True, False):
                out = DitTodoAdapter.joint_attention(q, k, v, TEXT_TOKENS, (h, w), f, balance)
                change = rel_change(out, full)
                kept = dit.kept_share((h, w), f)
                rows.append(row(name, "sdpa", size, _config(f, balance), rel_change=change,
                                applied=f"{f:g}x, {kept:.1%} of the image keys kept"))  # fmt: skip
                log(f"  {name} {size.label} {rows[-1]['config']}: output change {change:.5f}")
    return rows
