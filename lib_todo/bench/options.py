"""Command-line options of `python -m lib_todo.bench`: profile defaults, and every value checked up front.

`parse_args` returns checked options or raises `OptionError` (one line: the flag, the value, what is
accepted) before anything is built or measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..settings import MAX_FACTOR, MIN_FACTOR, TodoSettings
from . import registry
from .kernels import KERNELS
from .variants import CONFIG_KINDS

PROG = "python -m lib_todo.bench"
# Defaults per profile; explicit command-line values win. threads None: torch's own default.
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {
        "sizes": "512,1024,1536,2048,1000x744",
        "factors": "2,3,4",
        "kernels": "sdpa,chunked",
        "repeats": 10,
        "warmup": 1,
        "width": 320,
        "threads": None,
        "budget_s": 330.0,
    },
    "cpu": {
        "sizes": "256,512",
        "factors": "2,4",
        "kernels": "sdpa",
        "repeats": 5,
        "warmup": 1,
        "width": 64,
        "threads": 1,
        "budget_s": 60.0,
    },
    "quick": {
        "sizes": "128,256",
        "factors": "2",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 1,
        "width": 32,
        "threads": 1,
        "budget_s": 30.0,
    },
}
SIZE_RANGE = (64, 8192)
WIDTH_RANGE = (32, 1280)
DEVICES = "auto, cpu, cuda, cuda:N"


class OptionError(ValueError):
    """A bad command-line value: `str()` is the one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse whose own errors (unknown flag, missing value) are one-line OptionErrors too."""

    def error(self, message: str):  # type: ignore[override]
        raise OptionError(f"{message} (see --help)")


def _bad(flag: str, value: Any, accepted: str, why: str = "") -> OptionError:
    """The one-line error: `--flag: got 'value'[, why]; accepted: ...`."""
    return OptionError(f"{flag}: got {value!r}{', ' + why if why else ''}; accepted: {accepted}")


def csv(text: str) -> list[str]:
    """ "a, b," -> ["a", "b"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """ "1024" -> (1024, 1024); "1000x744" -> (width 1000, height 744); multiples of 8 in SIZE_RANGE."""
    lo, hi = SIZE_RANGE
    accepted = f"N or WxH in px, multiples of 8 from {lo} to {hi}"
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise _bad("--sizes", text, accepted) from None
    if len(parts) not in (1, 2) or any(p % 8 or not lo <= p <= hi for p in parts):
        raise _bad("--sizes", text, accepted)
    return (parts[0], parts[-1])


def _defaults(key: str) -> str:
    """ "cuda X; cpu Y; quick Z": the profile defaults of `key`, for --help."""
    if key == "models":
        return "; ".join(f"{p} {','.join(registry.defaults(p))}" for p in PROFILES)
    shown = {
        p: "torch's" if v[key] is None else f"{v[key]:g}" if isinstance(v[key], float) else v[key]
        for p, v in PROFILES.items()
    }
    if len(set(shown.values())) == 1:
        return str(next(iter(shown.values())))
    return "; ".join(f"{p} {v}" for p, v in shown.items())


def build_parser() -> argparse.ArgumentParser:
    """The parser; --help shows every default (per profile: cuda, cpu, or quick with --quick)."""
    from . import __doc__ as bench_doc  # the package's docstring; imported here, once the package is loaded

    epilog = "Defaults come from a profile: cuda on a CUDA device, cpu on the CPU, quick with --quick."
    p = _Parser(prog=PROG, description=bench_doc.split("\n")[0], epilog=epilog)
    models = ", ".join(f"{e.name} ({e.summary})" for e in registry.ENTRIES)
    add = p.add_argument
    add("--device", default="auto", help=f"{DEVICES} (default: auto = cuda if available, else cpu)")
    add("--models", help=f"comma list of {models} (default: {_defaults('models')})")
    add("--sizes", help=f'comma list of N or WxH px, e.g. "512,1000x744" (default: {_defaults("sizes")})')
    add(
        "--factors",
        help=f"factors of the f and f+l2 rows, {MIN_FACTOR:g} to {MAX_FACTOR:g} (default: {_defaults('factors')})",
    )
    add("--kernels", help=f"comma list of {', '.join(KERNELS)} (default: {_defaults('kernels')})")
    add("--configs", default="all", help=f"comma list of {', '.join(CONFIG_KINDS)} (default: all)")
    add(
        "--repeats",
        help=f"timed rounds per cell, at least 1; a cell stops after 3 once its share of --budget-s "
        f"is spent (default: {_defaults('repeats')})",
    )
    add("--warmup", help=f"untimed rounds per cell, 0 or more (default: {_defaults('warmup')})")
    add(
        "--width",
        help=f"model channel width, a multiple of 32 from {WIDTH_RANGE[0]} to {WIDTH_RANGE[1]}; "
        f"320 = the real models (default: {_defaults('width')})",
    )
    add("--threads", help=f"torch CPU threads, 1 to the core count (default: {_defaults('threads')})")
    add(
        "--budget-s",
        help="seconds for all cells by the bench's clock (CPU time on a one-thread CPU run), split evenly over the "
        f"cells left (default: {_defaults('budget_s')})",
    )
    add(
        "--out",
        default="bench_out/bench.json",
        help="results JSON; the PNG is written next to it (default: bench_out/bench.json)",
    )
    add("--quick", action="store_true", help="the small CPU profile the tests run (about 20 s)")
    add("--replot", metavar="JSON", help="only redraw the PNG of a results JSON and print its table")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Checked options with the profile's defaults filled in; OptionError on the first bad value."""
    args = build_parser().parse_args(argv)
    if args.replot:
        args.replot_data = read_results(args.replot)
        png = Path(args.replot).with_suffix(".png")
        _check_writable("--replot", args.replot, f"a results JSON in a folder where {png.name} can be written", png)
        return args
    args.device = check_device(args.device)
    args.profile = "quick" if args.quick else torch.device(args.device).type
    sizes_given = args.sizes is not None
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    _check_names(args)
    args.model_sizes = {
        name: check_sizes(args.sizes if sizes_given else registry.MODELS[name].sizes.get(args.profile, args.sizes))
        for name in args.models_list
    }
    args.factor_list = check_factors(args.factors, args.configs_set)
    args.repeats = _integer("--repeats", args.repeats, 1, None)
    args.warmup = _integer("--warmup", args.warmup, 0, None)
    args.width = _integer("--width", args.width, *WIDTH_RANGE, multiple=32)
    if args.threads is not None:
        args.threads = _integer("--threads", args.threads, 1, os.cpu_count() or 1)
    args.budget_s = _seconds("--budget-s", args.budget_s)
    check_out(args.out)
    return args


def check_device(text: str) -> str:
    """The device to run on ("auto" resolved); OptionError when it is unknown or not available here."""
    name = text.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise _bad("--device", text, DEVICES, "the bench times CPUs and CUDA GPUs only")
    if not torch.cuda.is_available():
        why = "is a CPU build" if torch.version.cuda is None else "sees no CUDA GPU"
        raise _bad("--device", text, "auto, cpu", f"this torch ({torch.__version__}) {why}")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise _bad("--device", text, f"cuda:0 to cuda:{count - 1}", f"{count} CUDA device(s) here")
    return name


def _check_names(args: argparse.Namespace) -> None:
    """--models, --kernels, --configs: known names only; sets models_list, kernel_list, configs_set."""
    args.models = args.models or ",".join(registry.defaults(args.profile))
    for flag, given, known in (
        ("--models", args.models, tuple(registry.MODELS)),
        ("--kernels", args.kernels, KERNELS),
        ("--configs", "" if args.configs == "all" else args.configs, CONFIG_KINDS),
    ):
        unknown = [g for g in csv(given) if g not in known]
        if unknown:
            raise _bad(flag, ",".join(unknown), f"comma list of {', '.join(known)}", "unknown")
    args.models_list = list(dict.fromkeys(csv(args.models))) or _empty("--models", args.models)
    args.kernel_list = list(dict.fromkeys(csv(args.kernels))) or _empty("--kernels", args.kernels)
    args.configs_set = set(CONFIG_KINDS) if args.configs == "all" else set(csv(args.configs))
    if not args.configs_set:
        _empty("--configs", args.configs)


def check_sizes(text: str) -> list[tuple[int, int]]:
    """The sizes of a comma list (see parse_size), at least one."""
    return list(dict.fromkeys(parse_size(s) for s in csv(text))) or _empty("--sizes", text)


def _empty(flag: str, value: str) -> Any:
    raise _bad(flag, value, "a non-empty comma list", "empty")


def check_factors(text: str, kinds: set[str]) -> list[float]:
    """The factors of the f and f+l2 rows, each one TodoSettings accepts as a fixed factor (not auto)."""
    accepted = f"comma list of numbers from {MIN_FACTOR:g} to {MAX_FACTOR:g} (auto has its own row)"
    factors = []
    for item in csv(text):
        try:
            factor = float(item)
            TodoSettings(factor=factor, factor_level2=factor)  # the library's own range check
        except ValueError:
            raise _bad("--factors", item, accepted) from None
        if factor < MIN_FACTOR:  # 0 is AUTO to TodoSettings
            raise _bad("--factors", item, accepted)
        factors.append(factor)
    if not factors and kinds & {"f", "f+l2"}:
        _empty("--factors", text)
    return list(dict.fromkeys(factors))


def _integer(flag: str, value: Any, lo: int, hi: int | None, multiple: int = 1) -> int:
    """`value` as an int in [lo, hi] and a multiple of `multiple`, else OptionError."""
    accepted = f"a whole number, at least {lo}" if hi is None else f"a whole number from {lo} to {hi}"
    if multiple > 1:
        accepted = f"a multiple of {multiple} from {lo} to {hi}"
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _bad(flag, value, accepted) from None
    if number < lo or (hi is not None and number > hi) or number % multiple:
        raise _bad(flag, value, accepted)
    return number


def _seconds(flag: str, value: Any) -> float:
    """`value` as a positive, finite number of seconds, else OptionError."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise _bad(flag, value, "a positive number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise _bad(flag, value, "a positive number of seconds")
    return seconds


def check_out(text: str) -> None:
    """--out ends in .json and can be written (its folder is created if missing)."""
    path = Path(text)
    accepted = "a writable path ending in .json"
    if path.suffix != ".json":
        raise _bad("--out", text, accepted)
    if path.is_dir():
        raise _bad("--out", text, accepted, "a folder")
    _check_writable("--out", text, accepted, path, path.with_suffix(".png"))


def _check_writable(flag: str, text: str, accepted: str, *paths: Path) -> None:
    """The folder of `paths` takes a new file (probed with a temporary file, removed) and each path that
    exists is writable; else OptionError."""
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=paths[0].parent, prefix=f".{paths[0].stem}.", suffix=".tmp"):
            pass
        for path in paths:
            if path.exists() and (path.is_dir() or not os.access(path, os.W_OK)):
                raise PermissionError(f"{path} cannot be replaced")
    except OSError as err:
        raise _bad(flag, text, accepted, f"not writable ({err.strerror or err})") from None


def read_results(text: str) -> dict[str, Any]:
    """The results JSON that --replot names, checked to hold rows; OptionError otherwise."""
    accepted = "a results JSON written by the bench"
    path = Path(text)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise _bad("--replot", text, accepted, "no such file") from None
    except OSError as err:
        raise _bad("--replot", text, accepted, f"not readable ({err.strerror or err})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise _bad("--replot", text, accepted, f"not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise _bad("--replot", text, accepted, "no list of rows in it")
    return data
