"""Random-weight checkpoints in the published single-file layouts, for live webui tests without a download.

    python tools/live/checkpoint.py --family sd15|flux|sdxl|zimage OUT.safetensors [--seed N]

One function per model family (registered with @family; adding a family is one more such function). Each yields
(key, tensor) pairs in the layout the webuis' own loaders detect, and `write_safetensors` streams them to disk one
tensor at a time, so a multi-gigabyte text encoder never has to sit in memory whole. Deterministic for a seed.

Families:
- sd15: the SD1.5 ldm layout (UNet of v1-inference.yaml, KL autoencoder, CLIP ViT-L/14 text tower), fp16, 2.1 GB.
- flux: FLUX.1 [dev] as one file, in the layout of the published all-in-one files: `model.diffusion_model.*`
  (the BFL layout, with guidance_in: dev), `vae.*` (the Flux autoencoder, z 16, BFL/ldm keys),
  `text_encoders.clip_l.transformer.*` (CLIP-L) and `text_encoders.t5xxl.transformer.*` (T5 v1.1 XXL encoder at
  its published size, 4.76 billion weights, stored as float8_e4m3fn: 4.8 GB). The transformer is as small as Forge
  Neo's detection lets it be: it reads the hidden size from `img_in`/`txt_in`, the head count as hidden / 128 (the
  RoPE axes 16 + 56 + 56), and counts the double and single blocks: FLUX_HIDDEN wide, one block of each kind.
- sdxl: SDXL base in the sgm layout at its published size (every webui checks the transformer depths 0/2/10 and
  the widths), with CLIP-L and OpenCLIP bigG, fp16.
- zimage: Z-Image (Turbo) as one file: `model.diffusion_model.*` (the NextDiT layout), `vae.*` (the Flux
  autoencoder, which Z-Image uses) and `text_encoders.qwen3_4b.transformer.*` (Qwen3-4B at its published size,
  4.02 billion weights, float8_e4m3fn). Forge Neo's detection takes a NextDiT as Z-Image only at width 3840 (30
  heads of 128), builds two noise and two context refiner blocks whatever the file holds, and counts the main
  layers: ZIMAGE_LAYERS main layer(s) at the full width, bf16.

No layer is left all-zero where the published init zeroes it (ldm's attention `proj_out` and ResBlock `out`, the
adaLN modulations and final layer DiTs start at zero): a zero layer there would hide attention from the pixels,
and ToDo could never change an image.

Needs torch and `stable-diffusion-sdkit` (the `ldm` package, for the autoencoders and the SD UNet); no
`transformers`, no `safetensors` (the file format is written here).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

REPO = Path(__file__).resolve().parents[2]
Tensors = Iterator[tuple[str, torch.Tensor]]

# CLIP ViT-L/14 text tower (SD1.x, SDXL's first encoder, Flux's clip_l).
CLIP_VOCAB, CLIP_POSITIONS, CLIP_WIDTH, CLIP_LAYERS, CLIP_MLP = 49408, 77, 768, 12, 3072
# T5 v1.1 XXL encoder (Flux's t5xxl), as in its config.json.
T5_VOCAB, T5_WIDTH, T5_LAYERS, T5_HEADS, T5_HEAD_DIM, T5_FF, T5_BUCKETS = 32128, 4096, 24, 64, 64, 10240, 32
# FLUX.1: head dim = sum of the RoPE axes (16, 56, 56) = 128; latent 16 channels patchified 2x2; T5 width 4096;
# CLIP-L pooled 768. The hidden size is ours to choose (a multiple of 128, read by the webui from img_in).
FLUX_HEAD_DIM, FLUX_LATENT, FLUX_PATCH, FLUX_MLP_RATIO = 128, 16, 2, 4
FLUX_HIDDEN, FLUX_DOUBLE_BLOCKS, FLUX_SINGLE_BLOCKS = 256, 1, 1
VAE_BASE = {
    "double_z": True,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
VAE_CONFIG = {**VAE_BASE, "z_channels": 4}  # SD1.x / SDXL
VAE_EMBED_DIM = 4
FLUX_VAE_CONFIG = {**VAE_BASE, "z_channels": 16}  # Flux's ae: no quant convs around the latent
# Z-Image (NextDiT with Z-Image's modulation), as its transformer config.json: width 3840 (Neo reads "Z-Image" from
# it), 30 heads of 128 (RoPE axes 32 + 48 + 48), 2 noise and 2 context refiner blocks, FFN 8/3 of the width rounded
# up to 256, time embedding 1024 -> 256 (the modulations' input), caption features of Qwen3-4B (2560). The main
# layer count is ours: the webui counts them.
ZIMAGE_DIM, ZIMAGE_HEAD_DIM, ZIMAGE_REFINERS, ZIMAGE_LAYERS, ZIMAGE_ADALN = 3840, 128, 2, 1, 256
ZIMAGE_FFN = 256 * -(-int(8.0 / 3.0 * ZIMAGE_DIM) // 256)
ZIMAGE_T_HIDDEN, ZIMAGE_FREQ, ZIMAGE_PATCH_IN = 1024, 256, FLUX_LATENT * FLUX_PATCH**2
# Qwen3-4B (Z-Image's text encoder), as its config.json: 36 layers, width 2560, 32 query heads and 8 key/value
# heads of 128, MLP 9728, vocabulary 151936, q/k RMS norms per head; the LM head is tied (not stored).
QWEN3_VOCAB, QWEN3_WIDTH, QWEN3_LAYERS, QWEN3_MLP = 151936, 2560, 36, 9728
QWEN3_HEADS, QWEN3_KV_HEADS, QWEN3_HEAD_DIM = 32, 8, 128
QWEN3_INIT_STD = 0.02  # its initializer_range


# Families.


@dataclass(frozen=True)
class Family:
    """One model family: its tensors (a function of the seed), its default file name and what it is."""

    name: str
    filename: str
    summary: str
    tensors: Callable[[int], Tensors]


FAMILIES: dict[str, Family] = {}


def family(name: str, filename: str, summary: str) -> Callable[[Callable[[int], Tensors]], Callable[[int], Tensors]]:
    """Register `fn(seed) -> (key, tensor) pairs` as the family `name`."""

    def register(fn: Callable[[int], Tensors]) -> Callable[[int], Tensors]:
        FAMILIES[name] = Family(name, filename, summary, fn)
        return fn

    return register


@family("sd15", "todo-random-sd15.safetensors", "SD1.5 (ldm layout), fp16, 2.1 GB")
def sd15_tensors(seed: int) -> Tensors:
    """The SD1.5 single file: UNet, KL autoencoder, CLIP-L, all fp16."""
    parts = (unet_state(seed), vae_state(seed), clip_text_state(seed))
    for part in parts:
        for key, value in part.items():
            yield key, half(value, torch.float16)


@family(
    "flux",
    "todo-random-flux.safetensors",
    f"FLUX.1 dev all-in-one ({FLUX_DOUBLE_BLOCKS}+{FLUX_SINGLE_BLOCKS} blocks at {FLUX_HIDDEN}, bf16; ae; "
    "CLIP-L fp16; T5-XXL float8_e4m3fn), 4.9 GB",
)
def flux_tensors(seed: int) -> Tensors:
    """The Flux single file; the T5 encoder, 97% of it, is made and written one tensor at a time."""
    dit = flux_dit_specs(FLUX_HIDDEN, FLUX_DOUBLE_BLOCKS, FLUX_SINGLE_BLOCKS)
    yield from materialise(dit, seed + 10, torch.bfloat16, "model.diffusion_model.")
    yield from ((f"vae.{k}", half(v, torch.bfloat16)) for k, v in autoencoder_state(seed, FLUX_VAE_CONFIG).items())
    clip = clip_text_state(seed, prefix="text_encoders.clip_l.transformer.text_model.")
    yield from ((k, half(v, torch.float16)) for k, v in clip.items())
    yield from materialise(t5_encoder_specs(), seed + 11, torch.float8_e4m3fn, "text_encoders.t5xxl.transformer.")


@family(
    "sdxl",
    "todo-random-sdxl.safetensors",
    "SDXL base layout (sgm UNet 2.57 billion weights, KL autoencoder, CLIP-L and OpenCLIP bigG), fp16, 6.9 GB",
)
def sdxl_tensors(seed: int) -> Tensors:
    """The SDXL single file: `model.diffusion_model.*` (sgm layout, written key by key), `first_stage_model.*`,
    `conditioner.embedders.0.transformer.text_model.*` (CLIP-L) and `conditioner.embedders.1.model.*` (bigG)."""
    yield from materialise(sdxl_unet_specs(), seed + 20, torch.float16, "model.diffusion_model.")
    yield from ((k, half(v, torch.float16)) for k, v in vae_state(seed).items())
    clip = clip_text_state(seed, prefix="conditioner.embedders.0.transformer.text_model.")
    yield from ((k, half(v, torch.float16)) for k, v in clip.items())
    yield from materialise(open_clip_bigg_specs(), seed + 21, torch.float16, "conditioner.embedders.1.model.")


@family(
    "zimage",
    "todo-random-zimage.safetensors",
    f"Z-Image all-in-one (NextDiT at {ZIMAGE_DIM}, {ZIMAGE_REFINERS}+{ZIMAGE_REFINERS} refiners and {ZIMAGE_LAYERS} "
    "main layer, bf16; Flux ae; Qwen3-4B float8_e4m3fn), 6.0 GB",
)
def zimage_tensors(seed: int) -> Tensors:
    """The Z-Image single file; the Qwen3-4B encoder, two thirds of it, is made and written one tensor at a time."""
    yield from materialise(zimage_dit_specs(ZIMAGE_LAYERS), seed + 30, torch.bfloat16, "model.diffusion_model.")
    yield from ((f"vae.{k}", half(v, torch.bfloat16)) for k, v in autoencoder_state(seed, FLUX_VAE_CONFIG).items())
    yield from materialise(qwen3_4b_specs(), seed + 31, torch.float8_e4m3fn, "text_encoders.qwen3_4b.transformer.")


# Weights described by shape and scale, made on demand (the DiTs and T5).


@dataclass(frozen=True)
class Weight:
    """One tensor to make: N(0, std) when std > 0, else filled with `fill` (norm scales: 1)."""

    key: str
    shape: tuple[int, ...]
    std: float = 0.0
    fill: float = 1.0


def linear(key: str, n_out: int, n_in: int, bias: bool = True, gain: float = 1.0) -> list[Weight]:
    """A Linear's weight N(0, gain / sqrt(n_in)) and (if any) a small random bias, never all zero."""
    weights = [Weight(f"{key}.weight", (n_out, n_in), gain * n_in**-0.5)]
    return weights + ([Weight(f"{key}.bias", (n_out,), 0.02)] if bias else [])


def materialise(specs: Iterable[Weight], seed: int, dtype: torch.dtype, prefix: str = "") -> Tensors:
    """The tensors of `specs`, one at a time, drawn from one generator in order (so deterministic), as `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    for w in specs:
        if w.std > 0:
            value = torch.randn(w.shape, generator=gen).mul_(w.std)
        else:
            value = torch.full(w.shape, w.fill)
        yield prefix + w.key, value.to(dtype)


def flux_dit_specs(hidden: int, doubles: int, singles: int, guidance: bool = True) -> list[Weight]:
    """The FLUX.1 transformer in the BFL layout (double_blocks / single_blocks), `hidden` wide.

    Modulations get half the usual scale, so (1 + scale) stays near 1; the final layer and every modulation,
    which DiTs initialise to zero, are random like the rest.
    """
    if hidden % FLUX_HEAD_DIM:
        raise ValueError(f"Flux hidden size {hidden}: must be a multiple of the head dim {FLUX_HEAD_DIM}")
    mlp = hidden * FLUX_MLP_RATIO
    patch_in = FLUX_LATENT * FLUX_PATCH**2
    specs = linear("img_in", hidden, patch_in)
    specs += linear("time_in.in_layer", hidden, 256) + linear("time_in.out_layer", hidden, hidden)
    specs += linear("vector_in.in_layer", hidden, CLIP_WIDTH) + linear("vector_in.out_layer", hidden, hidden)
    if guidance:
        specs += linear("guidance_in.in_layer", hidden, 256) + linear("guidance_in.out_layer", hidden, hidden)
    specs += linear("txt_in", hidden, T5_WIDTH)
    for i in range(doubles):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            specs += linear(f"{block}_mod.lin", 6 * hidden, hidden, gain=0.5)
            specs += linear(f"{block}_attn.qkv", 3 * hidden, hidden)
            specs += [Weight(f"{block}_attn.norm.{n}_norm.scale", (FLUX_HEAD_DIM,)) for n in ("query", "key")]
            specs += linear(f"{block}_attn.proj", hidden, hidden)
            specs += linear(f"{block}_mlp.0", mlp, hidden) + linear(f"{block}_mlp.2", hidden, mlp)
    for i in range(singles):
        block = f"single_blocks.{i}"
        specs += linear(f"{block}.linear1", 3 * hidden + mlp, hidden)
        specs += linear(f"{block}.linear2", hidden, hidden + mlp)
        specs += [Weight(f"{block}.norm.{n}_norm.scale", (FLUX_HEAD_DIM,)) for n in ("query", "key")]
        specs += linear(f"{block}.modulation.lin", 3 * hidden, hidden, gain=0.5)
    specs += linear("final_layer.linear", patch_in, hidden)
    specs += linear("final_layer.adaLN_modulation.1", 2 * hidden, hidden, gain=0.5)
    return specs


def t5_encoder_specs() -> list[Weight]:
    """The T5 v1.1 XXL encoder (`shared`, `encoder.*`), scaled as T5 initialises it.

    Embedding N(0, 1); q N(0, (width * head_dim)^-0.5); k, v, o and wi_* N(0, width^-0.5); wo N(0, ff^-0.5);
    the relative attention bias (first block only) N(0, width^-0.5); layer norms 1.
    """
    w, inner = T5_WIDTH, T5_HEADS * T5_HEAD_DIM
    specs = [Weight("shared.weight", (T5_VOCAB, w), 1.0)]
    for i in range(T5_LAYERS):
        attn = f"encoder.block.{i}.layer.0.SelfAttention"
        specs.append(Weight(f"{attn}.q.weight", (inner, w), (w * T5_HEAD_DIM) ** -0.5))
        specs += [Weight(f"{attn}.{name}.weight", (inner, w), w**-0.5) for name in ("k", "v")]
        specs.append(Weight(f"{attn}.o.weight", (w, inner), inner**-0.5))
        if i == 0:
            specs.append(Weight(f"{attn}.relative_attention_bias.weight", (T5_BUCKETS, T5_HEADS), w**-0.5))
        specs.append(Weight(f"encoder.block.{i}.layer.0.layer_norm.weight", (w,)))
        ff = f"encoder.block.{i}.layer.1.DenseReluDense"
        specs += [Weight(f"{ff}.{name}.weight", (T5_FF, w), w**-0.5) for name in ("wi_0", "wi_1")]
        specs.append(Weight(f"{ff}.wo.weight", (w, T5_FF), T5_FF**-0.5))
        specs.append(Weight(f"encoder.block.{i}.layer.1.layer_norm.weight", (w,)))
    return specs + [Weight("encoder.final_layer_norm.weight", (w,))]


def zimage_block(key: str, modulated: bool) -> list[Weight]:
    """One NextDiT block at Z-Image's width: fused qkv (30 + 30 + 30 heads), out without bias, per-head q/k RMS
    norms, the SwiGLU FFN (w1, w3 in; w2 out), four RMS norms, and (noise refiners and main layers) the
    modulation: one Linear from the 256-wide time embedding to 4 x width (scale/gate for attention and FFN), random
    at half scale like Flux's (published inits zero it)."""
    d = ZIMAGE_DIM
    specs = linear(f"{key}.attention.qkv", 3 * d, d, bias=False) + linear(f"{key}.attention.out", d, d, bias=False)
    specs += [Weight(f"{key}.attention.{n}_norm.weight", (ZIMAGE_HEAD_DIM,)) for n in ("q", "k")]
    specs += linear(f"{key}.feed_forward.w1", ZIMAGE_FFN, d, bias=False)
    specs += linear(f"{key}.feed_forward.w2", d, ZIMAGE_FFN, bias=False)
    specs += linear(f"{key}.feed_forward.w3", ZIMAGE_FFN, d, bias=False)
    specs += [
        Weight(f"{key}.{n}.weight", (d,)) for n in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2")
    ]
    return specs + (linear(f"{key}.adaLN_modulation.0", 4 * d, ZIMAGE_ADALN, gain=0.5) if modulated else [])


def zimage_dit_specs(layers: int) -> list[Weight]:
    """The Z-Image transformer (NextDiT, Z-Image modulation) in its checkpoint layout, `layers` main layers.

    The pad tokens are there as in the published files (Neo pads caption and image tokens to a multiple of 32 when
    the file has them); the final layer's modulation and linear are random like every other layer.
    """
    d = ZIMAGE_DIM
    specs = linear("x_embedder", d, ZIMAGE_PATCH_IN)
    for i in range(ZIMAGE_REFINERS):
        specs += zimage_block(f"noise_refiner.{i}", modulated=True)
    for i in range(ZIMAGE_REFINERS):
        specs += zimage_block(f"context_refiner.{i}", modulated=False)
    specs += linear("t_embedder.mlp.0", ZIMAGE_T_HIDDEN, ZIMAGE_FREQ) + linear(
        "t_embedder.mlp.2", ZIMAGE_ADALN, ZIMAGE_T_HIDDEN
    )
    specs += [Weight("cap_embedder.0.weight", (QWEN3_WIDTH,))] + linear("cap_embedder.1", d, QWEN3_WIDTH)
    for i in range(layers):
        specs += zimage_block(f"layers.{i}", modulated=True)
    specs += linear("final_layer.linear", ZIMAGE_PATCH_IN, d)
    specs += linear("final_layer.adaLN_modulation.1", d, ZIMAGE_ADALN, gain=0.5)
    return specs + [Weight("x_pad_token", (1, d), 0.02), Weight("cap_pad_token", (1, d), 0.02)]


def qwen3_4b_specs() -> list[Weight]:
    """Qwen3-4B's decoder (`model.*`, Hugging Face names), every linear N(0, initializer_range), norms 1."""
    w, std = QWEN3_WIDTH, QWEN3_INIT_STD
    q, kv = QWEN3_HEADS * QWEN3_HEAD_DIM, QWEN3_KV_HEADS * QWEN3_HEAD_DIM
    specs = [Weight("model.embed_tokens.weight", (QWEN3_VOCAB, w), std)]
    for i in range(QWEN3_LAYERS):
        layer = f"model.layers.{i}"
        specs += [
            Weight(f"{layer}.self_attn.q_proj.weight", (q, w), std),
            Weight(f"{layer}.self_attn.k_proj.weight", (kv, w), std),
            Weight(f"{layer}.self_attn.v_proj.weight", (kv, w), std),
            Weight(f"{layer}.self_attn.o_proj.weight", (w, q), std),
            Weight(f"{layer}.self_attn.q_norm.weight", (QWEN3_HEAD_DIM,)),
            Weight(f"{layer}.self_attn.k_norm.weight", (QWEN3_HEAD_DIM,)),
            Weight(f"{layer}.mlp.gate_proj.weight", (QWEN3_MLP, w), std),
            Weight(f"{layer}.mlp.up_proj.weight", (QWEN3_MLP, w), std),
            Weight(f"{layer}.mlp.down_proj.weight", (w, QWEN3_MLP), std),
            Weight(f"{layer}.input_layernorm.weight", (w,)),
            Weight(f"{layer}.post_attention_layernorm.weight", (w,)),
        ]
    return specs + [Weight("model.norm.weight", (w,))]


def norm(key: str, n: int) -> list[Weight]:
    """A GroupNorm / LayerNorm: weight 1, bias 0 (as published inits do; not a layer that hides anything)."""
    return [Weight(f"{key}.weight", (n,)), Weight(f"{key}.bias", (n,), fill=0.0)]


def conv(key: str, n_out: int, n_in: int, k: int = 3) -> list[Weight]:
    return [Weight(f"{key}.weight", (n_out, n_in, k, k), (n_in * k * k) ** -0.5), Weight(f"{key}.bias", (n_out,), 0.02)]


def res_block(key: str, n_in: int, n_out: int, emb: int) -> list[Weight]:
    """An ldm/sgm ResBlock; `out_layers.3`, zero in ldm, random here."""
    specs = norm(f"{key}.in_layers.0", n_in) + conv(f"{key}.in_layers.2", n_out, n_in)
    specs += linear(f"{key}.emb_layers.1", n_out, emb)
    specs += norm(f"{key}.out_layers.0", n_out) + conv(f"{key}.out_layers.3", n_out, n_out)
    return specs + (conv(f"{key}.skip_connection", n_out, n_in, 1) if n_in != n_out else [])


def spatial_transformer(key: str, ch: int, depth: int, context: int) -> list[Weight]:
    """An sgm SpatialTransformer with linear projections; `proj_out`, zero in ldm/sgm, random here."""
    specs = norm(f"{key}.norm", ch) + linear(f"{key}.proj_in", ch, ch)
    for d in range(depth):
        block = f"{key}.transformer_blocks.{d}"
        for attn, kv_in in (("attn1", ch), ("attn2", context)):
            specs += linear(f"{block}.{attn}.to_q", ch, ch, bias=False)
            specs += linear(f"{block}.{attn}.to_k", ch, kv_in, bias=False)
            specs += linear(f"{block}.{attn}.to_v", ch, kv_in, bias=False)
            specs += linear(f"{block}.{attn}.to_out.0", ch, ch)
        specs += linear(f"{block}.ff.net.0.proj", 8 * ch, ch) + linear(f"{block}.ff.net.2", ch, 4 * ch)
        specs += norm(f"{block}.norm1", ch) + norm(f"{block}.norm2", ch) + norm(f"{block}.norm3", ch)
    return specs + linear(f"{key}.proj_out", ch, ch)


SDXL_CHANNELS, SDXL_DEPTHS, SDXL_CONTEXT, SDXL_ADM, SDXL_EMB = (320, 640, 1280), (0, 2, 10), 2048, 2816, 1280


def sdxl_unet_specs() -> list[Weight]:
    """The SDXL base UNet (sgm_xl_base.yaml: channels 320/640/1280, transformer depth 0/2/10, middle 10, context
    2048, ADM 2816, two ResBlocks per level), in the ldm/sgm key layout the webuis detect it by."""
    specs = linear("time_embed.0", SDXL_EMB, 320) + linear("time_embed.2", SDXL_EMB, SDXL_EMB)
    specs += linear("label_emb.0.0", SDXL_EMB, SDXL_ADM) + linear("label_emb.0.2", SDXL_EMB, SDXL_EMB)
    specs += conv("input_blocks.0.0", 320, 4)
    skips, ch, index = [320], 320, 1
    for level, (width, depth) in enumerate(zip(SDXL_CHANNELS, SDXL_DEPTHS, strict=True)):
        for _ in range(2):
            specs += res_block(f"input_blocks.{index}.0", ch, width, SDXL_EMB)
            ch = width
            if depth:
                specs += spatial_transformer(f"input_blocks.{index}.1", ch, depth, SDXL_CONTEXT)
            skips.append(ch)
            index += 1
        if level < len(SDXL_CHANNELS) - 1:
            specs += conv(f"input_blocks.{index}.0.op", ch, ch)
            skips.append(ch)
            index += 1
    specs += res_block("middle_block.0", ch, ch, SDXL_EMB)
    specs += spatial_transformer("middle_block.1", ch, SDXL_DEPTHS[-1], SDXL_CONTEXT)
    specs += res_block("middle_block.2", ch, ch, SDXL_EMB)
    index = 0
    for level in reversed(range(len(SDXL_CHANNELS))):
        width, depth = SDXL_CHANNELS[level], SDXL_DEPTHS[level]
        for i in range(3):
            specs += res_block(f"output_blocks.{index}.0", ch + skips.pop(), width, SDXL_EMB)
            ch, part = width, 1
            if depth:
                specs += spatial_transformer(f"output_blocks.{index}.1", ch, depth, SDXL_CONTEXT)
                part = 2
            if level and i == 2:
                specs += conv(f"output_blocks.{index}.{part}.conv", ch, ch)
            index += 1
    return specs + norm("out.0", ch) + conv("out.2", 4, ch)


BIGG_WIDTH, BIGG_LAYERS, BIGG_MLP = 1280, 32, 5120


def open_clip_bigg_specs() -> list[Weight]:
    """OpenCLIP ViT-bigG/14's text tower in its own layout (SDXL's second encoder), scaled as OpenCLIP
    initialises it: token N(0, 0.02), positions N(0, 0.01), in-projections w^-0.5 (2L)^-0.5, out-projections
    w^-0.5, fc (2w)^-0.5, text projection w^-0.5."""
    w = BIGG_WIDTH
    in_std, out_std, fc_std = w**-0.5 * (2 * BIGG_LAYERS) ** -0.5, w**-0.5, (2 * w) ** -0.5
    specs = [Weight("positional_embedding", (CLIP_POSITIONS, w), 0.01)]
    specs.append(Weight("token_embedding.weight", (CLIP_VOCAB, w), 0.02))
    for i in range(BIGG_LAYERS):
        block = f"transformer.resblocks.{i}"
        specs += norm(f"{block}.ln_1", w)
        specs += [Weight(f"{block}.attn.in_proj_weight", (3 * w, w), in_std)]
        specs += [Weight(f"{block}.attn.in_proj_bias", (3 * w,), fill=0.0)]
        specs += [Weight(f"{block}.attn.out_proj.weight", (w, w), out_std)]
        specs += [Weight(f"{block}.attn.out_proj.bias", (w,), fill=0.0)]
        specs += norm(f"{block}.ln_2", w)
        specs += [
            Weight(f"{block}.mlp.c_fc.weight", (BIGG_MLP, w), fc_std),
            Weight(f"{block}.mlp.c_fc.bias", (BIGG_MLP,), fill=0.0),
        ]
        specs += [
            Weight(f"{block}.mlp.c_proj.weight", (w, BIGG_MLP), in_std),
            Weight(f"{block}.mlp.c_proj.bias", (w,), fill=0.0),
        ]
    return specs + norm("ln_final", w) + [Weight("text_projection", (w, w), w**-0.5)]


# Parts built from modules (SD UNet, autoencoders) or written key by key (CLIP).


def half(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floats as `dtype`; integer tensors (position ids) kept."""
    return value.to(dtype) if value.is_floating_point() else value


def bench_unets() -> ModuleType:
    """lib_todo/bench/unets.py (the reference UNets), loaded by path: pure torch, none of the bench's CLI."""
    name = "todo_live_bench_unets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "lib_todo" / "bench" / "unets.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def unet_state(seed: int) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*`: the SD1.5 ldm UNet at full width, no all-zero layer left."""
    unet = bench_unets().build("ldm-sd15", width=320, seed=seed)
    return {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}


def autoencoder_state(seed: int, config: dict) -> dict[str, torch.Tensor]:
    """`encoder.*`, `decoder.*` of the ldm KL autoencoder of `config` (random, default init)."""
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    torch.manual_seed(seed + 2)
    parts = {"encoder": Encoder(**config), "decoder": Decoder(**config)}
    return {f"{name}.{k}": v for name, part in parts.items() for k, v in part.state_dict().items()}


def vae_state(seed: int) -> dict[str, torch.Tensor]:
    """`first_stage_model.*`: encoder, decoder and the two 1x1 convs around the latent (SD1.x / SDXL)."""
    state = autoencoder_state(seed, VAE_CONFIG)
    z = VAE_CONFIG["z_channels"]
    convs = {
        "quant_conv": torch.nn.Conv2d(2 * z, 2 * VAE_EMBED_DIM, 1),
        "post_quant_conv": torch.nn.Conv2d(VAE_EMBED_DIM, z, 1),
    }
    state.update({f"{name}.{k}": v for name, conv in convs.items() for k, v in conv.state_dict().items()})
    return {f"first_stage_model.{k}": v for k, v in state.items()}


def clip_text_state(seed: int, prefix: str = "cond_stage_model.transformer.text_model.") -> dict[str, torch.Tensor]:
    """CLIP's text tower under `prefix`, scaled as CLIP initialises it.

    Embeddings N(0, 0.02) / N(0, 0.01); attention in-projections N(0, w^-0.5 (2L)^-0.5), out-projection
    N(0, w^-0.5); MLP fc1 N(0, (2w)^-0.5), fc2 like the in-projections; biases 0, layer norms 1/0.
    """
    gen = torch.Generator().manual_seed(seed + 3)
    w = CLIP_WIDTH
    in_std, out_std, fc_std = w**-0.5 * (2 * CLIP_LAYERS) ** -0.5, w**-0.5, (2 * w) ** -0.5

    def normal(std: float, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.ones(w), f"{name}.bias": torch.zeros(w)}

    def clip_linear(name: str, std: float, n_out: int, n_in: int) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": normal(std, n_out, n_in), f"{name}.bias": torch.zeros(n_out)}

    state = {
        "embeddings.token_embedding.weight": normal(0.02, CLIP_VOCAB, w),
        "embeddings.position_embedding.weight": normal(0.01, CLIP_POSITIONS, w),
        "embeddings.position_ids": torch.arange(CLIP_POSITIONS, dtype=torch.int64)[None],
    }
    for i in range(CLIP_LAYERS):
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj"):
            state.update(clip_linear(f"{layer}.self_attn.{proj}", in_std, w, w))
        state.update(clip_linear(f"{layer}.self_attn.out_proj", out_std, w, w))
        state.update(norm(f"{layer}.layer_norm1"))
        state.update(clip_linear(f"{layer}.mlp.fc1", fc_std, CLIP_MLP, w))
        state.update(clip_linear(f"{layer}.mlp.fc2", in_std, w, CLIP_MLP))
        state.update(norm(f"{layer}.layer_norm2"))
    state.update(norm("final_layer_norm"))
    return {f"{prefix}{k}": v for k, v in state.items()}


# The file.

SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
}


def write_safetensors(path: Path, tensors: Iterable[tuple[str, torch.Tensor]], metadata: dict[str, str]) -> int:
    """Stream (key, tensor) pairs into a .safetensors file; returns the number of tensors.

    The data goes to `<path>.data.partial` as it comes (one tensor in memory at a time), then the header
    (8-byte little-endian length, JSON with each tensor's dtype, shape and byte range) and the data are joined
    into `<path>.partial`, renamed to `path` last: an interrupted run never leaves a half file under `path`.
    Raises ValueError on a non-finite weight or a repeated key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path, partial = path.with_name(path.name + ".data.partial"), path.with_name(path.name + ".partial")
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    try:
        with open(data_path, "wb") as data:
            for key, value in tensors:
                if key in header:
                    raise ValueError(f"{key}: written twice")
                if value.is_floating_point() and not torch.isfinite(value.float()).all():
                    raise ValueError(f"{key}: non-finite weights")
                raw = value.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
                header[key] = {
                    "dtype": SAFETENSORS_DTYPES[value.dtype],
                    "shape": list(value.shape),
                    "data_offsets": [offset, offset + raw.nbytes],
                }
                data.write(memoryview(raw))
                offset += raw.nbytes
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
        with open(partial, "wb") as out, open(data_path, "rb") as data:
            out.write(struct.pack("<Q", len(head)) + head)
            while chunk := data.read(1 << 26):
                out.write(chunk)
        partial.replace(path)
    finally:
        data_path.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return len(header) - 1


def make_checkpoint(path: Path, family_name: str = "sd15", seed: int = 0) -> Path:
    """Write the random checkpoint of `family_name` (see FAMILIES) to `path` (.safetensors)."""
    chosen = FAMILIES[family_name]
    meta = {"format": "pt", "sd-webui-todo": f"random {chosen.name}, seed {seed}: {chosen.summary}"}
    write_safetensors(Path(path), chosen.tensors(seed), meta)
    return Path(path)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"checkpoint.py: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="checkpoint.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="sd15", help=f"one of {', '.join(FAMILIES)} (default sd15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("out", type=Path, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if args.family not in FAMILIES:
        print(f"checkpoint.py: --family {args.family!r}: use one of {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    if args.out.suffix != ".safetensors":
        print(f"checkpoint.py: {args.out}: only a .safetensors file can be written", file=sys.stderr)
        return 2
    make_checkpoint(args.out, args.family, args.seed)
    print(f"{args.out}: random {args.family}, seed {args.seed} ({args.out.stat().st_size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
