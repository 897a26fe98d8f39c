"""Stand-in for Forge Neo's backend/nn/qwen.py (Qwen-Image, Qwen-Image-Edit), small and in our words.

What ToDo relies on, as in Neo: the network class is named `QwenImageTransformer2DModel` and has `patch_size`,
`process_img` and `transformer_blocks`; each block's `attn` projects image and text apart, joins q, k, v text
FIRST, turns the joint q and k by RoPE, and calls the module-level `attention_function(q, k, v, heads, mask)`
imported by name, with (B, L, heads*D) tensors and the mask left None (the block hands the text mask to the
attention under a name it ignores); the output is split at the text length. The latent is (B, C, 1, H, W), padded
circularly to the 2x2 patch. Edit's reference latents (`ref_latents`, else the host's global list, Neo's
`dynamic_args.ref_latents`) are patchified after the target, with index 1, 2, ... on the first RoPE axis. The
output is the target's tokens only, cropped back to the latent. `transformer_options` is accepted and ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from stub_flux.attention import attention_function
from stub_flux.parts import AXES_DIM, grid_positions, mlp, patchify, rotate, rotation_table, timestep_features
from torch import nn

REF_LATENTS: list[torch.Tensor] = []  # Neo's dynamic_args.ref_latents: Edit references set outside the conds
CONTEXT_DIM = 24
LATENT_CHANNELS = 4


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.img_qkv, self.txt_qkv = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, 3 * hidden)
        self.img_out, self.txt_out = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, img, txt, txt_mask=None, pe=None, attention_mask=None):
        """img (B, N, C), txt (B, T, C); `txt_mask` is ignored, as Neo's attention ignores it."""
        n_txt = txt.shape[1]
        joint = torch.cat([self.txt_qkv(txt), self.img_qkv(img)], dim=1)  # text first
        q, k, v = joint.unflatten(-1, (3, self.heads, -1)).unbind(2)  # (B, L, heads, D) each
        q, k = (rotate(t.transpose(1, 2), pe).transpose(1, 2) for t in (q, k))
        out = attention_function(q.flatten(2), k.flatten(2), v.flatten(2), self.heads, attention_mask)
        return self.img_out(out[:, n_txt:]), self.txt_out(out[:, :n_txt])


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.mod = nn.Linear(hidden, 4 * hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.attn = Attention(hidden, heads)
        self.img_mlp, self.txt_mlp = mlp(hidden), mlp(hidden)

    def forward(self, img, txt, txt_mask, temb, pe):
        img_scale, img_shift, txt_scale, txt_shift = self.mod(F.silu(temb))[:, None].chunk(4, dim=-1)
        img_attn, txt_attn = self.attn(
            self.norm(img) * (1 + img_scale) + img_shift, self.norm(txt) * (1 + txt_scale) + txt_shift, txt_mask, pe
        )
        img, txt = img + img_attn, txt + txt_attn
        return txt + self.txt_mlp(txt), img + self.img_mlp(img)


class QwenImageTransformer2DModel(nn.Module):
    def __init__(self, hidden: int = 32, heads: int = 2, depth: int = 2, context_dim: int = CONTEXT_DIM) -> None:
        super().__init__()
        self.patch_size = 2
        features = LATENT_CHANNELS * self.patch_size**2
        self.img_in, self.txt_in = nn.Linear(features, hidden), nn.Linear(context_dim, hidden)
        self.time_in = nn.Linear(32, hidden)
        self.transformer_blocks = nn.ModuleList(Block(hidden, heads) for _ in range(depth))
        self.proj_out = nn.Linear(hidden, features)
        assert hidden // heads == sum(AXES_DIM)

    def process_img(self, x: torch.Tensor, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(B, C, 1, H, W) -> tokens (B, h*w, C*4), positions (B, h*w, 3) centred on the grid, the grid h x w."""
        tokens, grid = patchify(x[:, :, 0], self.patch_size)
        centre = (-(grid[0] // 2), -(grid[1] // 2))
        return tokens, grid_positions(x.shape[0], grid, index=float(index), offset=centre), grid

    def forward(self, x, timesteps, context, attention_mask=None, ref_latents=None, transformer_options=None, **kw):
        b, _, _, height, width = x.shape
        img, img_ids, grid = self.process_img(x)
        n_target = img.shape[1]
        for index, ref in enumerate(ref_latents or REF_LATENTS, start=1):
            tokens, ids, _ = self.process_img(ref.to(x).expand(b, -1, -1, -1, -1), index=index)
            img, img_ids = torch.cat([img, tokens], dim=1), torch.cat([img_ids, ids], dim=1)
        text_at = max(grid) // 2
        txt_ids = (text_at + torch.arange(context.shape[1], dtype=torch.float32))[None, :, None].expand(b, -1, 3)
        pe = rotation_table(torch.cat([txt_ids, img_ids], dim=1))
        img, txt = self.img_in(img), self.txt_in(context)
        temb = self.time_in(timestep_features(timesteps, 32).to(img.dtype))
        for block in self.transformer_blocks:
            txt, img = block(img, txt, attention_mask, temb, pe)
        out = self.proj_out(img[:, :n_target])
        h, w = grid
        out = out.reshape(b, h, w, LATENT_CHANNELS, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, 1, 2 * h, 2 * w)
        return out[..., :height, :width]


class QwenKModel(nn.Module):
    """backend/modules/k_model.py around the network, for a (B, C, 1, H, W) latent (eps-style scaling)."""

    def __init__(self, diffusion_model: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.predictor = predictor

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kwargs) -> torch.Tensor:
        sigma = t.view(-1, 1, 1, 1, 1)
        timestep = self.predictor.timestep(t) / 1000.0
        out = self.diffusion_model(
            x / (sigma**2 + 1) ** 0.5, timestep, context=c_crossattn, transformer_options=transformer_options or {},
            **kwargs,
        )  # fmt: skip
        return x - out * sigma


def make_patcher(network: nn.Module | None = None, seed: int = 0):
    """Neo's UNet patcher (the stand-in webui's) holding a small random Qwen-Image network."""
    import stub_models

    if network is None:
        torch.manual_seed(seed)
        network = QwenImageTransformer2DModel().eval()
    predictor = stub_models.Predictor(stub_models.DiscreteSchedule())
    return stub_models.UnetPatcher(QwenKModel(network, predictor), "neo")
