"""Does a temporal factor pay on Wan? Cells of 1 x 2 x 2 (ToDo's, frames kept apart) against 2 x 2 x 2 (two frames
share a key) and 1 x 3 x 3 (about as few keys as 2 x 2 x 2, frames kept apart).

    python tools/measure_wan_temporal.py [--frames 5] [--rounds 5] [--threads 2] [--heads 2] [--device cpu]
                                         [--seed 1] [--std 0.1] [--skip-model] [--skip-timing]

1. Time: one self-attention alone at Wan's 480p token grid (480 x 832 px: 30 x 52 tokens per frame, `--frames`
   latent frames; 21 = 81 video frames), q/k/v (1, heads, L, 128), each cell pattern's kept keys gathered and
   handed to PyTorch SDPA. One untimed round, then `--rounds` rounds in rotating order; speed-up = median over
   rounds of (full time / pattern time) within the round, the spread over rounds in brackets.
2. Output change: diffusers' WanTransformer3DModel, small (4 blocks, 2 heads of 32, random weights of `--seed`
   and `--std`), on a 5 x 16 x 26 token grid, its self-attention replaced by each pattern written out here (the
   kept key: each cell's centre, start + size // 2 along each axis; bias log(cell size), as ToDo's balance);
   ||out - full|| / ||full||, for latents of independent noise and of a smooth random field moving one latent
   pixel per frame (frames alike, as a video's are). With random weights this says how far each pattern moves
   the model, not how a video looks.
The spatial 1 x 2 x 2 row of part 2 is also run through lib_todo itself, to show the written-out pattern is ToDo's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from one_line_cli import OneLineParser, positive_float, positive_int  # noqa: E402

PATTERNS = {"1x2x2 (ToDo)": (1, 2, 2), "2x2x2": (2, 2, 2), "1x3x3": (1, 3, 3)}
GRID_480P = (30, 52)  # tokens per frame at 480 x 832 px (/8 latent, 2 x 2 patch)
HEAD_DIM = 128


def device_name(text: str) -> torch.device:
    if text != "cpu" and not (text.startswith("cuda") and torch.cuda.is_available()):
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: cpu, or cuda[:N] where a CUDA GPU is present")
    return torch.device(text)


def centres(side: int, cell: int) -> list[int]:
    return [start + min(cell, side - start) // 2 for start in range(0, side, cell)]


def sizes(side: int, cell: int) -> list[int]:
    return [min(cell, side - start) for start in range(0, side, cell)]


def kept(grid: tuple[int, int, int], cell: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each kept key in the row-major frames x h x w tokens, log of its cell's size)."""
    (t, h, w), (ct, ch, cw) = grid, cell
    index = [
        (f * h + r) * w + c for f in centres(t, ct) for r in centres(h, ch) for c in centres(w, cw)
    ]  # fmt: skip
    count = [a * b * c for a in sizes(t, ct) for b in sizes(h, ch) for c in sizes(w, cw)]
    return torch.tensor(index), torch.tensor(count, dtype=torch.float64).log()


def time_attention(frames: int, heads: int, rounds: int, device: torch.device) -> list[str]:
    """Markdown rows: keys kept, time per call, speed-up over full attention, per pattern."""
    grid = (frames, *GRID_480P)
    n = math.prod(grid)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, HEAD_DIM, generator=g, device=device, dtype=dtype) for _ in range(3))
    indexes = {name: kept(grid, cell)[0].to(device) for name, cell in PATTERNS.items()}

    def call(name: str | None) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if name is None:
            F.scaled_dot_product_attention(q, k, v)
        else:
            index = indexes[name]
            F.scaled_dot_product_attention(q, k.index_select(2, index), v.index_select(2, index))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    names: list[str | None] = [None, *PATTERNS]
    for name in names:  # warm-up, discarded
        call(name)
    times: dict[str | None, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(call(name))
    rows = [f"| full | {n} | {statistics.median(times[None]) * 1e3:.0f} ms | 1.00 |"]
    for name in PATTERNS:
        ratios = [full / t for full, t in zip(times[None], times[name], strict=True)]
        spread = f"[{min(ratios):.2f}-{max(ratios):.2f}]"
        keys = len(indexes[name])
        ms = statistics.median(times[name]) * 1e3
        rows.append(f"| {name} | {keys} | {ms:.0f} ms | {statistics.median(ratios):.2f} {spread} |")
    return rows


def small_wan(seed: int, std: float):
    import diffusers

    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=128, num_layers=4, rope_max_seq_len=64,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def latents(kind: str, frames: int, height: int, width: int) -> torch.Tensor:
    """(1, 16, frames, height, width): independent noise, or a smooth random field moving 1 pixel per frame."""
    g = torch.Generator().manual_seed(2)
    if kind == "noise":
        return torch.randn(1, 16, frames, height, width, generator=g)
    field = torch.randn(1, 16, height, width + frames, generator=g)
    kernel = torch.exp(-0.5 * (torch.arange(-6, 7.0) / 2.0) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    for dim in (2, 3):  # blur along rows, then columns (sigma 2 latent px)
        moved = field.movedim(dim, -1)
        shape = moved.shape
        moved = F.conv1d(moved.reshape(-1, 1, shape[-1]), kernel, padding=6).reshape(shape)
        field = moved.movedim(-1, dim)
    field = field / field.std()
    frames_ = [field[..., i : i + width] for i in range(frames)]
    return torch.stack(frames_, dim=2) + 0.1 * torch.randn(1, 16, frames, height, width, generator=g)


def with_pattern(grid: tuple[int, int, int], cell: tuple[int, int, int] | None):
    """A `dispatch_attention_fn` that runs self-attention over the video's tokens with the pattern's kept keys
    and log-size bias (None: full attention), every other call as diffusers does."""
    from diffusers.models.transformers import transformer_wan

    original = transformer_wan.dispatch_attention_fn
    n = math.prod(grid)
    index, bias = kept(grid, cell) if cell else (None, None)

    def dispatch(query, key, value, attn_mask=None, **kwargs):
        if cell is None or key.shape[1] != n or query.shape[1] != n:
            return original(query, key, value, attn_mask=attn_mask, **kwargs)
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))
        mask = bias.to(q.dtype).view(1, 1, 1, -1)
        out = F.scaled_dot_product_attention(q, k.index_select(2, index), v.index_select(2, index), attn_mask=mask)
        return out.transpose(1, 2)

    return transformer_wan, original, dispatch


def output_changes(seed: int, std: float) -> list[str]:
    import lib_todo
    from lib_todo import TodoSettings

    model = small_wan(seed, std)
    frames, height, width = 5, 32, 52
    grid = (frames, height // 2, width // 2)
    rows = []
    for kind in ("noise", "moving"):
        kwargs = {
            "hidden_states": latents(kind, frames, height, width),
            "timestep": torch.tensor([500]),
            "encoder_hidden_states": torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3)),
        }
        outs = {}
        for name, cell in {"full": None, **PATTERNS}.items():
            module, original, dispatch = with_pattern(grid, cell)
            module.dispatch_attention_fn = dispatch
            try:
                with torch.no_grad():
                    outs[name] = model(**kwargs).sample
            finally:
                module.dispatch_attention_fn = original
        with torch.no_grad(), lib_todo.patched(model, TodoSettings(factor=2)):
            todo = model(**kwargs).sample
        full = outs["full"]
        changes = " | ".join(f"{float((outs[n] - full).norm() / full.norm()):.4f}" for n in PATTERNS)
        same = float((todo - outs["1x2x2 (ToDo)"]).norm() / full.norm())
        rows.append(f"| {kind} | {changes} | {same:.1e} |")
    return rows


def main() -> None:
    parser = OneLineParser(prog="measure_wan_temporal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=positive_int, default=5, help="latent frames for the timing (default 5)")
    parser.add_argument("--rounds", type=positive_int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--heads", type=positive_int, default=2, help="attention heads for the timing (default 2)")
    parser.add_argument("--device", type=device_name, default=torch.device("cpu"), help="cpu or cuda[:N]")
    parser.add_argument("--seed", type=positive_int, default=1, help="the small model's weights (default 1)")
    parser.add_argument("--std", type=positive_float, default=0.1, help="their standard deviation (default 0.1)")
    parser.add_argument("--skip-model", action="store_true", help="only the timing (part 1)")
    parser.add_argument("--skip-timing", action="store_true", help="only the output change (part 2)")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    where = torch.cuda.get_device_name(opts.device) if opts.device.type == "cuda" else f"CPU, {opts.threads} threads"
    print(f"{where}, torch {torch.__version__}")
    if not opts.skip_timing:
        print(f"\n1. One self-attention at 480p, {opts.frames} latent frames, {opts.heads} heads of {HEAD_DIM}\n")
        print("| cells | keys | time | speed-up over full |\n|---|---|---|---|")
        print("\n".join(time_attention(opts.frames, opts.heads, opts.rounds, opts.device)), flush=True)
    if not opts.skip_model:
        print(
            f"\n2. Output change, small random WanTransformer3DModel (seed {opts.seed}, std {opts.std}), 5 x 16 x 26 "
            "tokens: ||out - full|| / ||full||\n"
        )
        print(f"| latent | {' | '.join(PATTERNS)} | lib_todo factor 2 vs 1x2x2 written out |")
        print("|---|" + "---|" * (len(PATTERNS) + 1))
        print("\n".join(output_changes(opts.seed, opts.std)))


if __name__ == "__main__":
    main()
