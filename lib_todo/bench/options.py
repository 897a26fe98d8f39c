"""Command-line options of `python -m lib_todo.bench`: profile defaults, and every value checked up front.

`parse_args` returns checked options or raises `OptionError` (one line: the flag, the value, what is
accepted) before anything is built or measured. Per family (`registry.MODELS`): its sizes are parsed by its
`parse_size`, its `--width` checked by its `widths`, its `--configs` kinds by its `kinds`.
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
from .family import KERNELS, Family, Size, SizeError, image_size, iter_kinds
from .studies import STUDIES, Study

PROG = "python -m lib_todo.bench"
DESCRIPTION = (
    "Benchmark of ToDo on any model family (UNets, Flux blocks, whole transformers on a GPU): speed-up over the "
    "baseline in the same run, the A/A noise floor, share of the ideal, output change; or a named --study."
)
# Defaults per profile; explicit command-line values win. threads None: torch's own default.
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {
        "sizes": "512,1024,1536,2048,1000x744",
        "factors": "2,3,4",
        "kernels": "sdpa,chunked",
        "repeats": 10,
        "warmup": 1,
        "threads": None,
        "budget_s": 330.0,
    },
    "cpu": {
        "sizes": "256,512",
        "factors": "2,4",
        "kernels": "sdpa",
        "repeats": 5,
        "warmup": 1,
        "threads": 1,
        "budget_s": 60.0,
    },
    "quick": {
        "sizes": "128,256",
        "factors": "2",
        "kernels": "sdpa",
        "repeats": 3,
        "warmup": 1,
        "threads": 1,
        "budget_s": 30.0,
    },
}
DEVICES = "auto, cpu, cuda, cuda:N"
CLOCK_CHOICES = ("auto", "wall", "cpu-time")


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


def parse_size(text: str, owner: Family | Study | None = None) -> Size:
    """ "1024" -> Size(1024, 1024); "1000x744" -> Size(width 1000, height 744): as the family (or study) `owner`
    writes its sizes (default: images, multiples of 8 from 64 to 8192)."""
    try:
        return (owner.parse_size if owner else image_size)(text)
    except SizeError as err:
        raise _bad("--sizes", text, str(err), f"for {owner.name}" if owner else "") from None


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


def _widths_help() -> str:
    """Each family's --width rule and defaults, for --help."""
    rules: dict[str, list[str]] = {}
    for fam in registry.FAMILIES:
        w = fam.widths
        values = dict.fromkeys(w.default.values())
        default = "; ".join(f"{p} {v}" for p, v in w.default.items()) if len(values) > 1 else str(next(iter(values)))
        rule = f"{w.meaning}, a multiple of {w.multiple} from {w.low} to {w.high} (default {default})"
        rules.setdefault(rule, []).append(fam.name)
    return "; ".join(f"{', '.join(names)}: {rule}" for rule, names in rules.items())


def build_parser() -> argparse.ArgumentParser:
    """The parser; --help shows every default (per profile: cuda, cpu, or quick with --quick)."""
    epilog = "Defaults come from a profile: cuda on a CUDA device, cpu on the CPU, quick with --quick."
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=epilog)
    models = ", ".join(f"{f.name} ({f.summary})" for f in registry.FAMILIES)
    kinds = ", ".join(iter_kinds(registry.FAMILIES))
    studies = ", ".join(f"{s.name} ({s.summary})" for s in STUDIES.values())
    add = p.add_argument
    add("--device", default="auto", help=f"{DEVICES} (default: auto = cuda if available, else cpu)")
    add("--models", help=f"comma list of {models} (default: {_defaults('models')})")
    add(
        "--sizes",
        help=f'comma list of N or WxH px, e.g. "512,1000x744" (a family may take its own, e.g. frames); default per '
        f"family where it has its own, else: {_defaults('sizes')}",
    )
    add(
        "--factors",
        help=f"factors of the f, f+l2 and f-nb rows, {MIN_FACTOR:g} to {MAX_FACTOR:g} "
        f"(default: {_defaults('factors')})",
    )
    add("--kernels", help=f"comma list of {', '.join(KERNELS)} (default: {_defaults('kernels')})")
    add(
        "--configs",
        default="all",
        help=f"comma list of {kinds}; each family runs those it knows (default: all). Every cell also times the "
        "baseline against itself (the A/A row: the noise floor)",
    )
    add(
        "--repeats",
        help=f"timed rounds per cell, at least 1; a cell stops after 3 once its share of --budget-s "
        f"is spent (default: {_defaults('repeats')})",
    )
    add("--warmup", help=f"untimed rounds per cell, 0 or more (default: {_defaults('warmup')})")
    add("--width", help=f"model width, per family: {_widths_help()}")
    add("--threads", help=f"torch CPU threads, 1 to the core count (default: {_defaults('threads')})")
    add(
        "--clock",
        default="auto",
        help="CPU clock: wall, or cpu-time (the process's CPU time: blind to other jobs' load; with several "
        "threads, set OMP_WAIT_POLICY=PASSIVE); auto = cpu-time with one thread, else wall; CUDA always times "
        "with CUDA events (default: auto)",
    )
    add(
        "--budget-s",
        help="seconds for all cells by the bench's clock (CPU time on a one-thread CPU run), split evenly over the "
        f"cells left (default: {_defaults('budget_s')})",
    )
    add(
        "--out",
        help="results JSON; the PNG is written next to it; a --study writes bench_out/STUDY.json unless given "
        "(default: bench_out/bench.json)",
    )
    add("--quick", action="store_true", help="the small CPU profile the tests run (about 30 s)")
    add("--study", help=f"run named studies instead of models, comma list of {studies}")
    add(
        "--replot",
        nargs="+",
        metavar="JSON",
        help="only redraw the PNG of results JSONs (one plot of all, beside the first) and print their table; "
        "also reads the JSONs of earlier versions of the bench",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Checked options with the profile's defaults filled in; OptionError on the first bad value."""
    args = build_parser().parse_args(argv)
    if args.replot:
        args.replot_data = [read_results(path) for path in args.replot]
        png = Path(args.replot[0]).with_suffix(".png")
        _check_writable("--replot", args.replot[0], f"a results JSON in a folder where {png.name} can be written", png)
        return args
    args.device = check_device(args.device)
    args.profile = "quick" if args.quick else torch.device(args.device).type
    given = {key for key in ("models", "sizes", "factors", "kernels", "width") if getattr(args, key) is not None}
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.clock_name = check_clock(args.clock, args.device)
    if args.study:
        _check_study(args, given)
    else:
        _check_models(args, given)
    args.repeats = _integer("--repeats", args.repeats, 1, None)
    args.warmup = _integer("--warmup", args.warmup, 0, None)
    if args.threads is not None:
        args.threads = _integer("--threads", args.threads, 1, os.cpu_count() or 1)
    args.budget_s = _seconds("--budget-s", args.budget_s)
    args.out = args.out or (f"bench_out/{args.study.replace(',', '_')}.json" if args.study else "bench_out/bench.json")
    check_out(args.out)
    return args


def _check_models(args: argparse.Namespace, given: set[str]) -> None:
    """The model options: names, then per model its sizes, factors and width (defaults from its family)."""
    _check_names(args)
    args.model_sizes = {}
    args.model_widths = {}
    for name in args.models_list:
        fam = registry.MODELS[name]
        sizes = args.sizes if "sizes" in given else fam.sizes.get(args.profile, args.sizes)
        args.model_sizes[name] = check_sizes(sizes, fam)
        args.model_widths[name] = check_width(args.width, fam, args.profile)
    args.factor_list = check_factors(args.factors, args.configs_set)


NOT_WITH_STUDY = "no model options with --study (a study builds what it studies)"


def _check_study(args: argparse.Namespace, given: set[str]) -> None:
    """--study: known names, none of the model options; sets study_list, size_list, factor_list."""
    for key in ("models", "kernels", "width"):
        if key in given:
            raise _bad(f"--{key}", getattr(args, key), NOT_WITH_STUDY)
    if args.configs != "all":
        raise _bad("--configs", args.configs, NOT_WITH_STUDY)
    names = csv(args.study)
    unknown = [n for n in names if n not in STUDIES]
    if unknown or not names:
        raise _bad("--study", ",".join(unknown) or args.study, f"comma list of {', '.join(STUDIES)}", "unknown")
    args.study_list = list(dict.fromkeys(names))
    first = STUDIES[args.study_list[0]]
    args.size_list = check_sizes(args.sizes if "sizes" in given else first.sizes, first)
    args.factor_list = check_factors(args.factors if "factors" in given else first.factors, {"f"})


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
    """--models, --kernels, --configs: known names only; sets models_list, kernel_list, configs_set (the kinds
    asked for) and model_kinds (per model, those of its kinds that were asked for: at least one)."""
    args.models = args.models or ",".join(registry.defaults(args.profile))
    known_kinds = tuple(iter_kinds(registry.FAMILIES))
    for flag, given, known in (
        ("--models", args.models, tuple(registry.MODELS)),
        ("--kernels", args.kernels, KERNELS),
        ("--configs", "" if args.configs == "all" else args.configs, known_kinds),
    ):
        unknown = [g for g in csv(given) if g not in known]
        if unknown:
            raise _bad(flag, ",".join(unknown), f"comma list of {', '.join(known)}", "unknown")
    args.models_list = list(dict.fromkeys(csv(args.models))) or _empty("--models", args.models)
    args.kernel_list = list(dict.fromkeys(csv(args.kernels))) or _empty("--kernels", args.kernels)
    args.configs_set = set(known_kinds) if args.configs == "all" else set(csv(args.configs))
    if not args.configs_set:
        _empty("--configs", args.configs)
    args.model_kinds = {}
    for name in args.models_list:
        fam = registry.MODELS[name]
        args.model_kinds[name] = {k for k in fam.kinds if k in args.configs_set}
        if not args.model_kinds[name]:
            raise _bad("--configs", args.configs, f"for {name}: {', '.join(fam.kinds)}", f"none of which {name} runs")


def check_clock(text: str, device: str) -> str:
    """--clock: the clock's name (a key of measure.CLOCKS) on `device`."""
    name = text.strip().lower()
    if name not in CLOCK_CHOICES:
        raise _bad("--clock", text, ", ".join(CLOCK_CHOICES))
    if device.startswith("cuda"):
        if name != "auto":
            raise _bad("--clock", text, "auto", "CUDA is timed with CUDA events")
        return "cuda-events"
    return name


def check_width(value: Any, family: Family, profile: str) -> int:
    """--width for `family`: its default for the profile when not given, else checked by its rule."""
    rule = family.widths
    if value is None:
        return rule.default[profile]
    accepted = f"for {family.name}: a multiple of {rule.multiple} from {rule.low} to {rule.high} ({rule.meaning})"
    number = _integer("--width", value, rule.low, None, accepted=accepted)
    if not rule.check(number):
        raise _bad("--width", value, accepted)
    return number


def check_sizes(text: str, owner: Family | Study | None) -> list[Size]:
    """The sizes of a comma list, as `owner` writes them (see parse_size), at least one."""
    return list(dict.fromkeys(parse_size(s, owner) for s in csv(text))) or _empty("--sizes", text)


def _empty(flag: str, value: str) -> Any:
    raise _bad(flag, value, "a non-empty comma list", "empty")


def check_factors(text: str, kinds: set[str]) -> list[float]:
    """The factors of the f, f+l2 and f-nb rows, each one TodoSettings accepts as a fixed factor (not auto)."""
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
    if not factors and kinds & {"f", "f+l2", "f-nb"}:
        _empty("--factors", text)
    return list(dict.fromkeys(factors))


def _integer(flag: str, value: Any, lo: int, hi: int | None, accepted: str = "") -> int:
    """`value` as an int in [lo, hi], else OptionError (saying `accepted`, by default the range)."""
    accepted = accepted or (f"a whole number, at least {lo}" if hi is None else f"a whole number from {lo} to {hi}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _bad(flag, value, accepted) from None
    if number < lo or (hi is not None and number > hi):
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
