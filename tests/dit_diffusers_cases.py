"""The small diffusers DiTs the family tests run on: real classes, small configs, random weights. Per family, how
to build the model, its inputs and how to run it (the family modules use these); and `CASES`, one row per family:
what the invariants every family must satisfy (tests/test_dit_diffusers_invariants.py) need of it.

Every model here: 2 layers (Flux: 2 double + 2 single blocks; NextDiT: 2 layers + 1 refiner of each kind) and
`TXT` caption tokens (Qwen-Image: `QWEN_TXT`).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from dit_family_checks import HandKernel, kernel_replaced, randomise
from torch import nn

from lib_todo.backends import anima, dit, ernie, flux, krea, lumina, qwen, wan

diffusers = pytest.importorskip("diffusers")

TXT, LAYERS = 5, 2
QWEN_TXT = 6


def run(model: nn.Module, inputs: dict) -> torch.Tensor | list[torch.Tensor]:
    """One forward without grad: its `sample` (Z-Image's one (C, F, H, W) per item: stacked when they agree)."""
    with torch.no_grad():
        out = model(**inputs).sample
    if isinstance(out, list):
        return torch.stack(out) if len({o.shape for o in out}) == 1 else out
    return out


def run_by_hand(model: nn.Module, inputs: dict, module: Any, hand: HandKernel) -> torch.Tensor:
    """`run`, with the kernel the processors in `module` call doing ToDo by hand where `hand` knows the call: what
    ToDo must compute, on the ORIGINAL model. The kernel: diffusers' `dispatch_attention_fn`, or torch's
    `F.scaled_dot_product_attention` where the processor calls it itself (Lumina 2)."""
    if hasattr(module, "dispatch_attention_fn"):
        name, kernel = "dispatch_attention_fn", hand.dispatch(module.dispatch_attention_fn)
    else:
        name, kernel = (
            "F",
            types.SimpleNamespace(scaled_dot_product_attention=hand.sdpa(F.scaled_dot_product_attention)),
        )
    with kernel_replaced(module, name, kernel):
        return run(model, inputs)


def processors(model: nn.Module) -> list:
    """Every attention processor in the model, in order."""
    return [m.processor for m in model.modules() if hasattr(m, "processor")]


# Anima: CosmosTransformer3DModel


def cosmos() -> nn.Module:
    """Anima's shape in small: (1, 2, 2) patch, RoPE extrapolated 4x in h and w, no learnable position embedding.
    Without the padding-mask channel: its concat needs torchvision, and it only adds a channel before the patch."""
    model = diffusers.CosmosTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=LAYERS,
        mlp_ratio=2.0, text_embed_dim=16, adaln_lora_dim=8, max_size=(8, 32, 32), patch_size=(1, 2, 2),
        rope_scale=(1.0, 4.0, 4.0), concat_padding_mask=False, extra_pos_embed_type=None,
    )  # fmt: skip
    return randomise(model)


def anima_inputs(t: int, h: int, w: int, seed: int = 1) -> dict:
    """Forward kwargs for a (t, h, w) latent; a text mask (the second caption 2 tokens shorter) for attn2."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, TXT, dtype=torch.bool)
    mask[1, -2:] = False
    return {
        "hidden_states": torch.randn(2, 4, t, h, w, generator=g),
        "timestep": torch.tensor([0.3, 0.7]),
        "encoder_hidden_states": torch.randn(2, TXT, 16, generator=g),
        "attention_mask": mask,
    }


# Ernie-Image: ErnieImageTransformer2DModel


def ernie_image(patch_size: int = 1) -> nn.Module:
    model = diffusers.ErnieImageTransformer2DModel(
        hidden_size=32, num_attention_heads=2, num_layers=LAYERS, ffn_hidden_size=48, in_channels=8,
        out_channels=8, patch_size=patch_size, text_in_dim=24, rope_axes_dim=(4, 6, 6),
    )  # fmt: skip
    return randomise(model)


def ernie_inputs(h: int, w: int, text_lens=(TXT, TXT - 2), seed: int = 1) -> dict:
    """Forward kwargs for an h x w latent; captions of different valid length per item (the mask's text columns)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(2, 8, h, w, generator=g),
        "timestep": torch.tensor([300.0, 700.0]),
        "text_bth": torch.randn(2, TXT, 24, generator=g),
        "text_lens": torch.tensor(text_lens),
    }


# Krea 2: Krea2Transformer2DModel


def krea2() -> nn.Module:
    """One layerwise and one refiner text-fusion block (text-only attention, the same processor class)."""
    model = diffusers.Krea2Transformer2DModel(
        in_channels=8, num_layers=LAYERS, attention_head_dim=16, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=32, timestep_embed_dim=16, text_hidden_dim=12, num_text_layers=3,
        text_num_attention_heads=2, text_num_key_value_heads=1, text_intermediate_size=16,
        num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    return randomise(model)


def _krea_grid_ids(h: int, w: int, t: int) -> torch.Tensor:
    """(h*w, 3) ids (t, row, col), row-major, as Krea2Pipeline.prepare_position_ids writes the image's (t = 0)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.full_like(rows, t), rows, cols], dim=-1).reshape(-1, 3).float()


def krea_inputs(h: int, w: int, refs: tuple[int, int] | None = None, seed: int = 1) -> dict:
    """Forward kwargs for an h x w token grid, position ids as the pipeline's, the second caption 2 tokens
    shorter (masked text columns); `refs`: a reference grid appended after the target, ids (1, row, col)."""
    g = torch.Generator().manual_seed(seed)
    ids, n = torch.cat([torch.zeros(TXT, 3), _krea_grid_ids(h, w, 0)]), h * w
    if refs:
        ids, n = torch.cat([ids, _krea_grid_ids(*refs, 1)]), n + refs[0] * refs[1]
    mask = torch.ones(2, TXT, dtype=torch.bool)
    mask[1, -2:] = False
    return {
        "hidden_states": torch.randn(2, n, 8, generator=g),
        "encoder_hidden_states": torch.randn(2, TXT, 3, 12, generator=g),
        "timestep": torch.tensor([0.3, 0.7]),
        "position_ids": ids,
        "encoder_attention_mask": mask,
    }


# Qwen-Image: QwenImageTransformer2DModel

QWEN_CHANNELS, QWEN_TEXT_DIM = 16, 24


def qwen_image(**config: Any) -> nn.Module:
    torch.manual_seed(0)
    model = diffusers.QwenImageTransformer2DModel(
        patch_size=2, in_channels=QWEN_CHANNELS, out_channels=4, num_layers=LAYERS, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=QWEN_TEXT_DIM, axes_dims_rope=(4, 6, 6), **config,
    )  # fmt: skip
    return randomise(model)


def qwen_inputs(shapes: list[tuple[int, int, int]], mask_lengths: tuple[int, ...] | None = None, seed: int = 1):
    """Transformer kwargs for a batch of 2 whose image tokens are `shapes` (target first, then references, as
    the Edit pipelines build `img_shapes`); `mask_lengths`: each caption's length (the rest is padding)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(f * h * w for f, h, w in shapes)
    kwargs = {
        "hidden_states": torch.randn(2, n, QWEN_CHANNELS, generator=g),
        "encoder_hidden_states": torch.randn(2, QWEN_TXT, QWEN_TEXT_DIM, generator=g),
        "timestep": torch.tensor([0.4, 0.8]),
        "img_shapes": [list(shapes)] * 2,
    }
    if mask_lengths is not None:
        kwargs["encoder_hidden_states_mask"] = torch.arange(QWEN_TXT)[None, :] < torch.tensor(mask_lengths)[:, None]
    return kwargs


# Wan: WanTransformer3DModel (t2v, i2v), WanVACETransformer3DModel

WAN_HEADS, WAN_HEAD_DIM, WAN_TEXT_DIM = 2, 12, 16
I2V_TEXT, I2V_IMAGE = 512, 4  # Wan's i2v processor takes the last 512 context tokens as text, the rest as image


def small_wan(kind: str = "t2v", seed: int = 0, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    config = dict(
        patch_size=(1, 2, 2), num_attention_heads=WAN_HEADS, attention_head_dim=WAN_HEAD_DIM, in_channels=4,
        out_channels=4, text_dim=WAN_TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=LAYERS, rope_max_seq_len=32,
    )  # fmt: skip
    if kind == "i2v":  # the image latent and mask concatenated along channels; CLIP image tokens in attn2
        config.update(in_channels=8, image_dim=8, added_kv_proj_dim=WAN_HEADS * WAN_HEAD_DIM)
    if kind == "vace":
        config.update(vace_layers=[0, 1], vace_in_channels=6)
    config.update(overrides)
    cls = diffusers.WanVACETransformer3DModel if kind == "vace" else diffusers.WanTransformer3DModel
    return randomise(cls(**config), seed=seed)  # every parameter drawn anew, non-zero


def wan_inputs(model: nn.Module, latent_thw: tuple[int, int, int], batch: int = 2, seed: int = 1) -> dict:
    """Forward kwargs for a latent of (frames, height, width): `TXT` text tokens (i2v: `I2V_TEXT`, and
    `I2V_IMAGE` CLIP image tokens), VACE's control latent."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    kwargs = {
        "hidden_states": torch.randn(batch, config.in_channels, *latent_thw, generator=g),
        "timestep": torch.tensor([300, 700][:batch]),
        "encoder_hidden_states": torch.randn(batch, I2V_TEXT if config.image_dim else TXT, WAN_TEXT_DIM, generator=g),
    }
    if config.image_dim:
        kwargs["encoder_hidden_states_image"] = torch.randn(batch, I2V_IMAGE, config.image_dim, generator=g)
    if "vace_in_channels" in config:
        kwargs["control_hidden_states"] = torch.randn(batch, config.vace_in_channels, *latent_thw, generator=g)
    return kwargs


# NextDiT: Lumina2Transformer2DModel, ZImageTransformer2DModel

CAP_DIM, NEXTDIT_CHANNELS = 24, 4


def lumina2_transformer() -> nn.Module:
    torch.manual_seed(0)
    model = diffusers.Lumina2Transformer2DModel(
        patch_size=2, in_channels=NEXTDIT_CHANNELS, hidden_size=48, num_layers=LAYERS, num_refiner_layers=1,
        num_attention_heads=3, num_kv_heads=1, multiple_of=16, axes_dim_rope=(4, 6, 6), cap_feat_dim=CAP_DIM,
    )  # fmt: skip
    return randomise(model, norms_around_one=True)  # diffusers starts pad tokens and some gates at zero


def z_image_transformer() -> nn.Module:
    torch.manual_seed(0)
    model = diffusers.ZImageTransformer2DModel(
        in_channels=NEXTDIT_CHANNELS, dim=48, n_layers=LAYERS, n_refiner_layers=1, n_heads=3, n_kv_heads=3,
        cap_feat_dim=CAP_DIM, axes_dims=[4, 6, 6], axes_lens=[512, 64, 64], siglip_feat_dim=8,
    )  # fmt: skip
    return randomise(model, norms_around_one=True)  # diffusers starts pad tokens and some gates at zero


def lumina2_inputs(latent_hw: tuple[int, int], caption_lengths: list[int], seed: int = 1) -> dict:
    """Forward kwargs for an (h, w) latent; one caption per item, of these lengths (a key mask where they differ)."""
    g = torch.Generator().manual_seed(seed)
    b, t = len(caption_lengths), max(caption_lengths)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(caption_lengths):
        mask[i, :n] = 1
    return {
        "hidden_states": torch.randn(b, NEXTDIT_CHANNELS, *latent_hw, generator=g),
        "timestep": torch.tensor([0.3, 0.8][:b]),
        "encoder_hidden_states": torch.randn(b, t, CAP_DIM, generator=g),
        "encoder_attention_mask": mask,
    }


def z_inputs(latent_hw, caption_lengths: list[int], seed: int = 1, **extra: Any) -> dict:
    """Forward kwargs: one (C, 1, h, w) latent per item (`latent_hw` for all, or a list of one per item) and one
    caption per item, of these lengths."""
    g = torch.Generator().manual_seed(seed)
    sizes = latent_hw if isinstance(latent_hw, list) else [latent_hw] * len(caption_lengths)
    return {
        "x": [torch.randn(NEXTDIT_CHANNELS, 1, *hw, generator=g) for hw in sizes],
        "t": torch.tensor([0.3, 0.8][: len(caption_lengths)]),
        "cap_feats": [torch.randn(n, CAP_DIM, generator=g) for n in caption_lengths],
        **extra,
    }


# Flux: FluxTransformer2DModel

FLUX_HEADS, FLUX_HEAD_DIM = 2, 16


def flux1() -> nn.Module:
    """diffusers' own initialisation (its attention already shows in the output)."""
    torch.manual_seed(0)
    model = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=LAYERS, num_single_layers=LAYERS, attention_head_dim=FLUX_HEAD_DIM,
        num_attention_heads=FLUX_HEADS, joint_attention_dim=24, pooled_projection_dim=12, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    return model.eval()


def flux_ids(h: int, w: int) -> torch.Tensor:
    """(h*w, 3) image ids (0, row, col), row-major."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def flux_inputs(h: int, w: int, extra: int = 0, seed: int = 1) -> dict:
    """Transformer kwargs for an h x w image grid (+ `extra` image tokens appended, as Kontext does)."""
    g = torch.Generator().manual_seed(seed)
    img_ids = flux_ids(h, w)
    if extra:
        ref = torch.zeros(extra, 3)
        ref[:, 0], ref[:, 2] = 1, torch.arange(extra)
        img_ids = torch.cat([img_ids, ref])
    return {
        "hidden_states": torch.randn(2, h * w + extra, 8, generator=g),
        "encoder_hidden_states": torch.randn(2, TXT, 24, generator=g),
        "pooled_projections": torch.randn(2, 12, generator=g),
        "timestep": torch.tensor([0.5, 0.7]),
        "img_ids": img_ids,
        "txt_ids": torch.zeros(TXT, 3),
    }


# The table


@dataclass(frozen=True)
class Case:
    """One family's row: its model and the calls the shared invariants make on it."""

    name: str
    family: dit.DitFamily  # what the table (backends.dit_family) must answer for the model
    module: str  # diffusers' module of the class (a diffusers without it skips the row)
    build: Callable[[], nn.Module]
    small: Callable[[nn.Module], dict]  # a small call that ToDo acts on at factor 2
    calls: int  # the attention calls ToDo serves in that forward
    below_native: Callable[[nn.Module], dict]  # a call far below the family's native size...
    native_px: int  # ...and a native size that call is twice of (auto then asks for factor 2)
    by_hand: Callable[[], HandKernel]  # ToDo written out for the small call at factor 2 (grid, where the image is)
    failing_block: Callable[[nn.Module], nn.Module]  # a block that raises, in the shared exception test...
    calls_before: int  # ...after ToDo served this many calls of the forward


def _hand(starts: Callable[[int], Any], grid: tuple[int, int, int] = (1, 6, 8)) -> Callable[[], HandKernel]:
    """A fresh hand kernel at factor 2: `starts(key length)` where the image starts (see HandKernel)."""
    return lambda: HandKernel(starts, grid, 2)


CASES = [
    Case(
        "Anima", anima.DIFFUSERS_ANIMA, "diffusers.models.transformers.transformer_cosmos", cosmos,
        small=lambda m: anima_inputs(1, 12, 16), calls=LAYERS,
        by_hand=_hand(lambda length: 0 if length == 48 else None),  # self-attention: the image alone
        below_native=lambda m: anima_inputs(1, 24, 24), native_px=96,  # 12 x 12 tokens of 16 px: 192 px
        failing_block=lambda m: m.transformer_blocks[1], calls_before=1,
    ),
    Case(
        "Ernie-Image", ernie.DIFFUSERS_ERNIE, "diffusers.models.transformers.transformer_ernie_image", ernie_image,
        small=lambda m: ernie_inputs(6, 8), calls=LAYERS,
        by_hand=_hand(lambda length: 0 if length == 48 + TXT else None),  # [image, text]
        below_native=lambda m: ernie_inputs(12, 12), native_px=96,  # 12 x 12 tokens of 16 px: 192 px
        failing_block=lambda m: m.layers[1], calls_before=1,
    ),
    Case(
        "Krea 2", krea.DIFFUSERS_KREA, "diffusers.models.transformers.transformer_krea2", krea2,
        small=lambda m: krea_inputs(6, 8), calls=LAYERS,  # the text-fusion blocks' calls are not ToDo's
        by_hand=_hand(lambda length: TXT if length == TXT + 48 else None),  # [text, image]
        below_native=lambda m: krea_inputs(12, 12), native_px=96,  # 12 x 12 tokens of 16 px: 192 px
        failing_block=lambda m: m.transformer_blocks[1], calls_before=1,
    ),
    Case(
        "Qwen-Image", qwen.DIFFUSERS_QWEN, "diffusers.models.transformers.transformer_qwenimage", qwen_image,
        small=lambda m: qwen_inputs([(1, 6, 8)]), calls=LAYERS,
        by_hand=_hand(lambda length: QWEN_TXT if length == QWEN_TXT + 48 else None),  # [text, image]
        below_native=lambda m: qwen_inputs([(1, 12, 12)]), native_px=96,  # 192 px, far below 1328 px
        failing_block=lambda m: m.transformer_blocks[1], calls_before=1,
    ),
    Case(
        "Wan", wan.DIFFUSERS_WAN, "diffusers.models.transformers.transformer_wan", small_wan,
        small=lambda m: wan_inputs(m, (2, 10, 14)), calls=LAYERS,
        by_hand=_hand(lambda length: 0 if length == 70 else None, (2, 5, 7)),  # attn1: the video alone
        below_native=lambda m: wan_inputs(m, (2, 10, 14)), native_px=48,  # 5 x 7 tokens a frame: 80 x 112 px
        failing_block=lambda m: m.blocks[1], calls_before=1,
    ),
    Case(
        "Lumina 2", lumina.DIFFUSERS_LUMINA, "diffusers.models.transformers.transformer_lumina2", lumina2_transformer,
        small=lambda m: lumina2_inputs((12, 16), [7, 4]), calls=1 + LAYERS,  # noise refiner, layers
        by_hand=_hand({48: [0, 0], 7 + 48: [7, 4]}.get),  # [image]; [caption (7 and 4 of 7 tokens), image]
        below_native=lambda m: lumina2_inputs((12, 16), [7, 4]), native_px=48,  # 6 x 8 tokens: 96 x 128 px
        failing_block=lambda m: m.layers[1], calls_before=2,
    ),
    Case(
        "Z-Image", lumina.DIFFUSERS_Z_IMAGE, "diffusers.models.transformers.transformer_z_image", z_image_transformer,
        small=lambda m: z_inputs((12, 16), [7, 70]), calls=1 + LAYERS,  # noise refiner, layers
        by_hand=_hand({64: [0, 0], 64 + 96: [0, 0]}.get),  # [image, pads]; [image, pads, caption, pads] (to 32)
        below_native=lambda m: z_inputs((12, 16), [7, 70]), native_px=48,  # 6 x 8 tokens: 96 x 128 px
        failing_block=lambda m: m.layers[0], calls_before=1,
    ),
    Case(
        "Flux", flux.DIFFUSERS_FLUX, "diffusers.models.transformers.transformer_flux", flux1,
        small=lambda m: flux_inputs(6, 8), calls=2 * LAYERS,  # double and single blocks
        by_hand=_hand(lambda length: TXT if length == TXT + 48 else None),  # [text, image]
        below_native=lambda m: flux_inputs(12, 12), native_px=96,  # 12 x 12 tokens of 16 px: 192 px
        failing_block=lambda m: m.single_transformer_blocks[0], calls_before=LAYERS,
    ),
]  # fmt: skip
