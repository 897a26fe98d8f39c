"""ToDo inside a DiT's attention, written out by hand for the tests: which keys stay, their bias, the softmax.

Independent of lib_todo on purpose (plain loops, float64): a family test swaps a host's attention kernel for a
`HandKernel` (tests/dit_family_checks.py, built on these two) to get what ToDo must compute, the documented rule:
the image tokens (`frames x h x w` from index `start`) keep one key per 1 x f x f cell, its centre token
(`start + size // 2` along each side: the lower/right middle of an even cell), with bias log(cell size); every
other key (text, padding, reference tokens) stays, with bias 0.
"""

from __future__ import annotations

import math

import torch


def cells(side: int, factor: int) -> list[tuple[int, int]]:
    """(first index, size) of each cell along one side: cells of `factor`, the last one maybe smaller."""
    return [(start, min(factor, side - start)) for start in range(0, side, factor)]


def kept_keys(start: int, grid: tuple[int, int, int], factor: int, length: int) -> tuple[list[int], list[float]]:
    """(indices of the keys ToDo keeps, their bias) for `length` keys with the image at `start`."""
    frames, h, w = grid
    n = frames * h * w
    keep = [i for i in range(length) if not start <= i < start + n]
    bias = [0.0] * len(keep)
    for f in range(frames):
        for r0, rn in cells(h, factor):
            for c0, cn in cells(w, factor):
                keep.append(start + f * h * w + (r0 + rn // 2) * w + c0 + cn // 2)
                bias.append(math.log(rn * cn))
    return keep, bias


def attention_by_hand(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: list[int],
    bias: list[float],
    scale: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k[keep]^T * scale + bias (+ mask[..., keep])) v[keep], in float64; q, k, v (B, heads, L, D)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.einsum("bhqd,bhkd->bhqk", q.double(), k[:, :, keep].double()) * scale
    logits = logits + torch.tensor(bias, dtype=torch.float64)
    if mask is not None:
        picked = mask[..., keep]
        logits = logits.masked_fill(~picked, float("-inf")) if picked.dtype == torch.bool else logits + picked.double()
    return (logits.softmax(-1) @ v[:, :, keep].double()).to(q.dtype)
