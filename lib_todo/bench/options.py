"""Command-line options of `python -m lib_todo.bench`, with defaults from a profile (cuda, cpu or quick)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

import torch

from . import unets
from .kernels import KERNELS
from .variants import CONFIG_KINDS

# Defaults per profile; explicit command-line values win.
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {
        "models": "sd15,sdxl,ldm-sd15",
        "sizes": "512,1024,1536,2048,1000x744",
        "factors": "2,3,4",
        "kernels": "sdpa,chunked",
        "repeats": 10,
        "warmup": 1,
        "width": 320,
        "threads": 0,
        "budget_s": 330.0,
    },
    "cpu": {
        "models": "sd15",
        "sizes": "256,512",
        "factors": "2,4",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 0,
        "width": 64,
        "threads": 1,
        "budget_s": 120.0,
    },
    "quick": {
        "models": "sd15",
        "sizes": "128,256",
        "factors": "2",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 0,
        "width": 32,
        "threads": 1,
        "budget_s": 30.0,
    },
}


def parse_size(text: str) -> tuple[int, int]:
    """ "1024" -> (1024, 1024); "1000x744" -> (width 1000, height 744); multiples of 8 only."""
    parts = [int(p) for p in text.lower().split("x")]
    w, h = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if len(parts) > 2 or w % 8 or h % 8 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: give N or WxH, multiples of 8")
    return w, h


def _csv(text: str) -> list[str]:
    """ "a, b," -> ["a", "b"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments, with profile defaults (cuda, cpu or quick) filled in."""
    from . import __doc__ as bench_doc  # the package's docstring; imported here, once the package is loaded

    p = argparse.ArgumentParser(prog="python -m lib_todo.bench", description=bench_doc.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--models", help=f"comma list of {', '.join(unets.SPECS)}")
    p.add_argument("--sizes", help='comma list of N or WxH in px, e.g. "512,1024,1000x744"')
    p.add_argument("--factors", help="ToDo factors for the f and f+l2 rows, e.g. 2,3,4")
    p.add_argument("--kernels", help="comma list of sdpa, chunked")
    p.add_argument("--configs", default="all", help=f"comma list of {', '.join(CONFIG_KINDS)} (default all)")
    p.add_argument("--repeats", type=int, help="timed rounds per cell (at least 3 are run when budget runs out)")
    p.add_argument("--warmup", type=int, help="untimed rounds per cell (CUDA 1, CPU 0: the first round is timed)")
    p.add_argument("--width", type=int, help="model channel width (320 = the real models)")
    p.add_argument("--threads", type=int, help="torch CPU threads (CPU default 1: stable ratios on a shared box)")
    p.add_argument("--budget-s", type=float, help="seconds for all cells; split evenly over the cells left")
    p.add_argument("--out", default="bench_out/bench.json", help="JSON path; the PNG is written next to it")
    p.add_argument("--quick", action="store_true", help="a small CPU run for the tests")
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG and reprint the table of a JSON")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    profile = PROFILES["quick" if args.quick else args.device.split(":")[0]]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device.startswith("cuda") and "models" not in _explicit(argv) and importlib.util.find_spec("ldm") is None:
        args.models = ",".join(m for m in _csv(args.models) if not m.startswith("ldm"))
    _check(p, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse unknown names and bad sizes before anything is built."""
    for option, given, known in (
        ("--models", _csv(args.models), unets.SPECS),
        ("--kernels", _csv(args.kernels), KERNELS),
        ("--configs", [] if args.configs == "all" else _csv(args.configs), CONFIG_KINDS),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        for text in _csv(args.sizes):
            parse_size(text)
        for text in _csv(args.factors):
            float(text)
    except (argparse.ArgumentTypeError, ValueError) as err:
        parser.error(str(err))


def _explicit(argv: list[str] | None) -> set[str]:
    """The option names given on the command line ("--budget-s=9" -> "budget_s")."""
    given = sys.argv[1:] if argv is None else argv
    return {a[2:].split("=")[0].replace("-", "_") for a in given if a.startswith("--")}
