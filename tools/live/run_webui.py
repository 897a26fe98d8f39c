"""Run the live webui tests against a real webui on this machine, one command per webui.

    python tools/live/run_webui.py --webui neo --root /path/to/webui [--family sd15|flux|zimage|sdxl]
        [--setup] [--checkpoint FILE] [--extension DIR ...] [--tests FILE ...] [-- PYTEST_ARGS...]

What it does, in order:
1. uses the webui's venv (`<root>/venv`, or --python); with --setup it first creates the venv if needed and
   installs torch (--torch), the packages the webui installs before its requirements, and its requirements
   file (its old `setuptools==` pin gives way to SETUPTOOLS below; lines that are not on PyPI are replaced
   as the profile below says, and each replacement is printed);
2. makes the random-weight checkpoint of --family (tools/live/checkpoint.py; default sd15) unless --checkpoint
   names one that exists; by default `<root>/models/Stable-diffusion/todo-random-<family>.safetensors`; for
   another family than sd15 also the SD1.5 one beside it (the DiT tests switch to it and back);
3. links this working tree into `<root>/extensions/sd-webui-todo` (so the current code is what runs; not with
   --no-todo; with --commit REV a `git archive` export of that commit instead), and each --extension DIR into
   `<root>/extensions/<name of DIR>`;
4. starts the webui API-only (with its UI too: --ui) on 127.0.0.1 with its offline CPU flags and a settings file
   of its own (`<root>/todo-live-settings.json`, fresh each run, so the user's config.json is neither read nor
   changed),
   waits until it answers, and selects the checkpoint through the API;
5. runs pytest on the family's test modules (sd15: tests/test_live_webui.py, flux and zimage:
   tests/test_live_family.py, sdxl: both; or the --tests files, or those in $TODO_LIVE_TESTS) with TODO_WEBUI_URL,
   TODO_WEBUI_LOG (the server's console) and TODO_LIVE_FAMILY set, stops the server, removes the links it made,
   and exits with pytest's exit code.

It writes only inside --root (links, settings file, server log `<root>/todo-live-server.log`, the checkpoint
if made there) and where --checkpoint points. Network: none of its own; the webui starts with its
environment preparation skipped and the Hugging Face libraries offline (HF_HUB_OFFLINE=1), unless
--prepare-environment lets the webui install and clone what it would on a first start. --setup runs pip, which
uses the index your pip is configured with.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Per model family (tools/live/checkpoint.py's --family): the test modules run by default.
FAMILY_TESTS = {
    "sd15": ("tests/test_live_webui.py",),
    "flux": ("tests/test_live_family.py",),
    "zimage": ("tests/test_live_family.py",),
    "sdxl": ("tests/test_live_webui.py", "tests/test_live_family.py"),  # SD1.5's tests hold for any UNet
}
DEFAULT_TESTS = FAMILY_TESTS["sd15"]
EXTENSION_NAME = "sd-webui-todo"
SWITCH_FAMILY = "sd15"  # the model the DiT tests switch to and back from, made beside the family's checkpoint
SETTINGS_NAME = "todo-live-settings.json"
LOG_NAME = "todo-live-server.log"
READY_LINE = "Startup time:"  # printed by every A1111-family webui once its scripts are loaded
# Torch >= 2.9 needs setuptools >= 77; the webuis still import pkg_resources, which setuptools 81 dropped.
SETUPTOOLS = "setuptools>=77.0.3,<81"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}


class UsageError(Exception):
    """Bad input or a missing prerequisite: reported as one line, exit code 2."""


@dataclass(frozen=True)
class WebuiProfile:
    """What differs between the webuis: their CPU flags, how a checkpoint is named, how they install."""

    cpu_flags: tuple[str, ...]
    ckpt_flag: str  # "--ckpt" takes the file; "--ckpt-dirs" takes its folder
    requirements: str  # the requirements file the webui's launcher installs
    first_packages: tuple[str, ...] = ()  # installed by the launcher before the requirements
    replacements: dict[str, str] = field(default_factory=dict)  # requirement line prefix -> PyPI requirement
    repositories: tuple[str, ...] = ()  # folders under repositories/ it imports at start (its launcher clones)
    extra_flags: tuple[str, ...] = ()


A1111_REPOSITORIES = ("stable-diffusion-stability-ai", "generative-models", "k-diffusion", "BLIP")
# The A1111 family's launcher installs OpenAI's CLIP from a GitHub archive; `clip-anytorch` on PyPI is the same
# `clip` module (k-diffusion imports it at start).
A1111_FIRST_PACKAGES = ("clip-anytorch",)
PROFILES = {
    "a1111": WebuiProfile(
        cpu_flags=("--use-cpu", "all", "--no-half", "--precision", "full", "--skip-torch-cuda-test"),
        ckpt_flag="--ckpt",
        requirements="requirements_versions.txt",
        first_packages=A1111_FIRST_PACKAGES,
        repositories=A1111_REPOSITORIES,
        extra_flags=("--do-not-download-clip", "--no-download-sd-model"),
    ),
    "forge": WebuiProfile(
        cpu_flags=("--always-cpu", "--skip-torch-cuda-test"),
        ckpt_flag="--ckpt",
        requirements="requirements_versions.txt",
        first_packages=A1111_FIRST_PACKAGES,
        repositories=("huggingface_guess", "BLIP"),
        extra_flags=("--do-not-download-clip", "--no-download-sd-model"),
    ),
    "reforge": WebuiProfile(
        cpu_flags=("--always-cpu", "--skip-torch-cuda-test"),
        ckpt_flag="--ckpt",
        requirements="requirements_versions.txt",
        first_packages=A1111_FIRST_PACKAGES,
        # reForge's requirements name a patched pydantic 1.10.15 wheel on GitHub; PyPI has the release.
        replacements={"https://github.com/Panchovix/pydantic-fixreforge/": "pydantic==1.10.15"},
        repositories=A1111_REPOSITORIES,
        extra_flags=("--do-not-download-clip", "--no-download-sd-model"),
    ),
    "neo": WebuiProfile(
        cpu_flags=("--cpu", "--skip-torch-cuda-test"),
        ckpt_flag="--ckpt-dirs",
        requirements="requirements.txt",
        first_packages=("gradio==4.40.0", "gradio_rangeslider==0.0.8"),
        extra_flags=("--skip-python-version-check",),
    ),
}


# Arguments.


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; everything after `--` goes to pytest."""
    argv = list(argv)
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = OneLineParser(prog="run_webui.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--webui", required=True, choices=sorted(PROFILES), help="which webui --root holds")
    p.add_argument("--root", required=True, type=Path, help="the webui's folder (where launch.py is)")
    p.add_argument("--python", type=Path, help="the webui venv's python (default: <root>/venv/bin/python)")
    p.add_argument("--setup", action="store_true", help="create the venv if missing and pip-install the webui")
    p.add_argument("--setup-only", action="store_true", help="--setup and make the checkpoint, then stop")
    p.add_argument("--base-python", default=sys.executable, help="python that creates the venv with --setup")
    p.add_argument("--torch", default=None, help="torch requirement for --setup (default: this python's torch)")
    p.add_argument(
        "--family",
        default="sd15",
        choices=sorted(FAMILY_TESTS),
        help="model family: which random checkpoint is made and which tests run (default sd15)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint; made if missing (default: <root>/models/Stable-diffusion/todo-random-<family>.safetensors)",
    )
    p.add_argument(
        "--extension",
        action="append",
        default=[],
        type=Path,
        help="also install this extension folder (linked into <root>/extensions); repeatable",
    )
    p.add_argument("--no-todo", action="store_true", help="leave this extension out (what the webui does alone)")
    p.add_argument(
        "--commit",
        help="install sd-webui-todo as committed at this revision (exported to <root>/todo-live-commits/<sha>) "
        "instead of this working tree",
    )
    p.add_argument(
        "--tests",
        action="append",
        default=[],
        help="pytest file to run (repeatable; default: $TODO_LIVE_TESTS, else tests/test_live_webui.py)",
    )
    p.add_argument(
        "--ui",
        action="store_true",
        help="start the webui with its UI and API (--api) instead of API only (--nowebui); an API-only start builds "
        "the scripts' UI before the on_before_ui callbacks (Neo), so it shows whether X/Y/Z axes are added in time",
    )
    p.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (default: a free one)")
    p.add_argument("--startup-timeout", type=float, default=1200.0, help="seconds to wait for the API")
    p.add_argument(
        "--prepare-environment",
        action="store_true",
        help="let the webui install and clone what "
        "it needs at start (network), instead of --skip-prepare-environment and offline mode",
    )
    p.add_argument(
        "--webui-arg",
        action="append",
        default=[],
        help="one more argument for launch.py, written --webui-arg=--flag; repeatable",
    )
    args = p.parse_args(argv)
    args.setup = args.setup or args.setup_only
    args.pytest_args = pytest_args
    return args


def validate(args: argparse.Namespace) -> None:
    """Resolve paths and check what must exist; raises UsageError naming what is wrong."""
    args.root = args.root.expanduser().resolve()
    if not (args.root / "launch.py").is_file():
        raise UsageError(f"--root {args.root}: no launch.py there; pass the webui's folder")
    args.python = (args.python or args.root / "venv" / "bin" / "python").expanduser().absolute()
    if not args.setup and not args.python.is_file():
        raise UsageError(f"no python at {args.python}: pass --python, or --setup to create <root>/venv")
    args.checkpoint = args.checkpoint or args.root / "models" / "Stable-diffusion" / checkpoint_name(args.family)
    args.checkpoint = args.checkpoint.expanduser()
    args.checkpoint = args.checkpoint.absolute()
    if not args.checkpoint.is_file() and args.checkpoint.suffix != ".safetensors":
        raise UsageError(f"--checkpoint {args.checkpoint}: missing, and only a .safetensors file can be made")
    for ext in args.extension:
        if not ext.is_dir():
            raise UsageError(f"--extension {ext}: not a folder")
    names = ([] if args.no_todo else [EXTENSION_NAME]) + [ext.resolve().name for ext in args.extension]
    if len(set(names)) != len(names):
        raise UsageError(f"--extension: two extensions would share a folder name in extensions/: {names}")
    installed = args.root / "extensions" / EXTENSION_NAME
    if args.no_todo and (installed.exists() or installed.is_symlink()):
        raise UsageError(f"--no-todo, but {installed} is there: move it away for the run without ToDo")
    args.tests = args.tests or os.environ.get("TODO_LIVE_TESTS", "").split() or list(FAMILY_TESTS[args.family])
    for test in args.tests:
        if not (REPO / test).is_file():
            raise UsageError(f"--tests {test}: no such file (paths are relative to {REPO})")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port}: use 1-65535, or 0 for a free port")
    missing = [name for name in PROFILES[args.webui].repositories if not (args.root / "repositories" / name).is_dir()]
    if missing and not args.prepare_environment:
        raise UsageError(
            f"{args.root}/repositories lacks {', '.join(missing)}: start the webui once as usual (it clones "
            "them), put them there, or pass --prepare-environment"
        )


# Venv.


def run_checked(cmd: Sequence[str], what: str, **kwargs: object) -> None:
    print(f"[live] {what}: {shlex.join(str(c) for c in cmd)}", flush=True)
    if subprocess.run(list(map(str, cmd)), **kwargs).returncode != 0:  # type: ignore[call-overload]
        raise UsageError(f"{what} failed (command above)")


def default_torch_requirement() -> str:
    """The torch this python runs, pinned (local build tags dropped), else plain `torch`."""
    try:
        import torch
    except ImportError:
        return "torch"
    return f"torch=={torch.__version__.split('+')[0]}"


def filtered_requirements(path: Path, profile: WebuiProfile) -> list[str]:
    """The webui's requirement lines as pip can install them next to a current torch."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip() if not raw.lstrip().startswith("http") else raw.strip()
        if not line:
            continue
        if line.lower().startswith("setuptools=="):
            print(f"[live] requirement {line!r} left out: torch needs a newer one ({SETUPTOOLS})", flush=True)
            continue
        for prefix, replacement in profile.replacements.items():
            if line.startswith(prefix):
                print(f"[live] requirement {line!r} replaced by {replacement!r} (PyPI)", flush=True)
                line = replacement
        lines.append(line)
    return lines


def setup_venv(args: argparse.Namespace, profile: WebuiProfile) -> None:
    """Create the venv if missing, then pip-install torch, the launcher's first packages and requirements.

    Torch is pinned in a constraints file for every step, so no requirement can swap it for another build.
    """
    venv = args.python.parent.parent
    if not args.python.is_file():
        run_checked([args.base_python, "-m", "venv", venv], "create the venv")
    torch_req = args.torch or default_torch_requirement()
    constraints = venv / "todo-live-constraints.txt"
    constraints.write_text(f"{torch_req}\n{SETUPTOOLS}\n", encoding="utf-8")
    pip = [args.python, "-m", "pip", "install", "-c", constraints]
    run_checked(pip + [torch_req, "torchvision"], "install torch")
    if profile.first_packages:
        run_checked(pip + list(profile.first_packages), "install the packages the launcher installs first")
    requirements = args.root / profile.requirements
    if not requirements.is_file():
        raise UsageError(f"{requirements}: missing; is --webui {args.webui} right for {args.root}?")
    filtered = venv / "todo-live-requirements.txt"
    filtered.write_text("\n".join(filtered_requirements(requirements, profile)) + "\n", encoding="utf-8")
    run_checked(pip + ["-r", filtered], f"install {profile.requirements}")


def venv_versions(python: Path) -> str:
    """'Python X.Y.Z, torch V' of the venv (for the summary line)."""
    code = "import sys, torch; print(f'Python {sys.version.split()[0]}, torch {torch.__version__}')"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise UsageError(f"{python} cannot import torch: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip()


def webui_version(root: Path) -> str:
    """The webui's git commit, if it is a git checkout."""
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "not a git checkout"


def tree_is_dirty(root: Path) -> bool:
    """Whether a git checkout has changes to tracked files (so the code tested is not exactly its commit)."""
    result = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return result.returncode == 0 and bool(result.stdout.strip())


# Checkpoint and extensions.


def checkpoint_name(family: str) -> str:
    """The default file name of a family's random checkpoint."""
    return f"todo-random-{family}.safetensors"


def ensure_checkpoint(path: Path, family: str = "sd15") -> None:
    """Make the random checkpoint of `family` at `path` unless a file is there."""
    if path.is_file():
        print(f"[live] checkpoint: {path} (reused)", flush=True)
        return
    print(f"[live] checkpoint: making a random-weight {family} checkpoint at {path}", flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from checkpoint import make_checkpoint
    except ImportError as err:
        raise UsageError(f"making the checkpoint needs torch and stable-diffusion-sdkit: {err}") from err
    started = time.monotonic()
    make_checkpoint(path, family)
    print(f"[live] checkpoint made in {time.monotonic() - started:.0f} s", flush=True)


def checkpoints_needed(args: argparse.Namespace) -> dict[Path, str]:
    """Checkpoint file -> family: the one tested, and for a family other than sd15 the SD1.5 one beside it."""
    needed = {args.checkpoint: args.family}
    if args.family != SWITCH_FAMILY:
        needed.setdefault(args.checkpoint.parent / checkpoint_name(SWITCH_FAMILY), SWITCH_FAMILY)
    return needed


def extension_links(args: argparse.Namespace, todo: Path = REPO) -> dict[str, Path]:
    """Folder name under extensions/ -> folder: sd-webui-todo at `todo` (unless --no-todo), then each --extension."""
    links = {} if args.no_todo else {EXTENSION_NAME: todo}
    return {**links, **{ext.resolve().name: ext for ext in args.extension}}


def export_commit(revision: str, root: Path) -> tuple[Path, str]:
    """sd-webui-todo as committed at `revision`, exported (git archive) to <root>/todo-live-commits/<sha>.

    Returns (folder, short sha). A clean copy of one commit, so a run tests exactly that commit even while the
    working tree is being edited. Reused when already there.
    """
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--short=12", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise UsageError(f"--commit {revision}: not a commit of {REPO}")
    sha = found.stdout.strip()
    folder = root / "todo-live-commits" / sha
    if not folder.is_dir():
        partial = folder.with_name(sha + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha], stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout)
        if archive.wait() != 0 or untar.returncode != 0:
            raise UsageError(f"--commit {revision}: git archive into {partial} failed")
        partial.rename(folder)
    print(f"[live] sd-webui-todo: commit {sha} exported to {folder}", flush=True)
    return folder, sha


@contextmanager
def linked_extensions(root: Path, sources: dict[str, Path]) -> Iterator[None]:
    """Link each source folder into root/extensions/<name> for the block; remove the links made here afterwards.

    A link already pointing at the same folder is kept as it was; anything else under that name is an error.
    """
    made: list[Path] = []
    try:
        for name, source in sources.items():
            link = root / "extensions" / name
            if link.is_symlink() and link.resolve() == source.resolve():
                continue
            if link.exists() or link.is_symlink():
                raise UsageError(f"{link} exists and is not a link to {source}: move it away for the test run")
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(source.resolve(), target_is_directory=True)
            made.append(link)
            print(f"[live] extension: {link} -> {source.resolve()}", flush=True)
        yield
    finally:
        for link in made:
            link.unlink()


# Server.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(args: argparse.Namespace, profile: WebuiProfile, port: int) -> list[str]:
    """launch.py's argument list: API only, loopback, this webui's CPU flags, our settings file and model."""
    model = args.checkpoint if profile.ckpt_flag == "--ckpt" else args.checkpoint.parent
    cmd = [
        str(args.python),
        "launch.py",
        "--api" if args.ui else "--nowebui",
        "--server-name",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-settings-file",
        str(args.root / SETTINGS_NAME),
        profile.ckpt_flag,
        str(model),
        "--skip-version-check",
        *profile.cpu_flags,
        *profile.extra_flags,
    ]
    if not args.prepare_environment:
        cmd += ["--skip-prepare-environment", "--skip-install"]
    return cmd + list(args.webui_arg)


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, **QUIET_ENV}
    if not args.prepare_environment:
        env.update(OFFLINE_ENV)
    env.pop("TODO_WEBUI_URL", None)
    return env


def http_json(url: str, payload: object = None, timeout: float = 10.0) -> object:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def log_tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def wait_until_ready(proc: subprocess.Popen, log: Path, url: str, timeout_s: float) -> None:
    """Wait for the ready line in the log, then for the API to answer; fail if the server exits first.

    A1111 stops when a request arrives before its scripts are loaded, so nothing is sent before that line.
    """
    deadline = time.monotonic() + timeout_s
    while READY_LINE not in log.read_text(encoding="utf-8", errors="replace"):
        if proc.poll() is not None:
            raise UsageError(f"the webui exited ({proc.returncode}) before it was ready; {log} ends:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise UsageError(f"the webui was not ready after {timeout_s:.0f} s; see {log}")
        time.sleep(2)
    while True:
        try:
            http_json(url + "/sdapi/v1/sd-models")
            return
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"the webui's API at {url} did not answer; {log} ends:\n{log_tail(log)}") from None
            time.sleep(2)


# Set through the API once the webui is up (its settings file must not be written before: Neo would take a file
# without its version stamp for an old install and wait for a key press). No live previews: reForge would try to
# download the "Approx NN" preview model at the first job, and previews only cost time here.
TEST_OPTIONS = {"live_previews_enable": False}


def select_checkpoint(url: str, checkpoint: Path) -> str:
    """Make the checkpoint the webui's current model and set TEST_OPTIONS (all in our settings file).

    Returns the model's title as the webui lists it.
    """
    models = http_json(url + "/sdapi/v1/sd-models")
    titles = [m["title"] for m in models if Path(m.get("filename", "")).name == checkpoint.name]  # type: ignore
    if not titles:
        raise UsageError(f"the webui does not list {checkpoint.name} among its models: {models}")
    http_json(url + "/sdapi/v1/options", {**TEST_OPTIONS, "sd_model_checkpoint": titles[0]}, timeout=900.0)
    return titles[0]


@contextmanager
def running_server(cmd: Sequence[str], root: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Start the webui in its own process group, its output in the log; stop the whole group afterwards."""
    log = root / LOG_NAME
    (root / SETTINGS_NAME).unlink(missing_ok=True)
    print(f"[live] start: {shlex.join(cmd)} (log: {log})", flush=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_pytest(args: argparse.Namespace, url: str) -> int:
    """pytest on the test files, told the webui's address and where its console output goes."""
    cmd = [sys.executable, "-m", "pytest", *args.tests, "-v", *args.pytest_args]
    env = {
        **os.environ,
        "TODO_WEBUI_URL": url,
        "TODO_WEBUI_LOG": str(args.root / LOG_NAME),
        "TODO_LIVE_FAMILY": args.family,
        "TODO_LIVE_UI": "1" if args.ui else "",
    }
    print(f"[live] TODO_WEBUI_URL={url} TODO_WEBUI_LOG={env['TODO_WEBUI_LOG']} {shlex.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server is stopped and the links removed."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, interrupted)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        validate(args)
        profile = PROFILES[args.webui]
        if args.setup:
            setup_venv(args, profile)
        versions = venv_versions(args.python)
        for path, family in checkpoints_needed(args).items():
            ensure_checkpoint(path, family)
        if args.setup_only:
            print(f"[live] {args.webui} at {args.root} is set up ({versions})", flush=True)
            return 0
        todo = REPO
        tested = f"{webui_version(REPO)}{' + uncommitted changes' if tree_is_dirty(REPO) else ''}"  # what starts
        if args.commit and not args.no_todo:
            todo, tested = export_commit(args.commit, args.root)
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with linked_extensions(args.root, extension_links(args, todo)):
            with running_server(launch_command(args, profile, port), args.root, server_env(args)) as proc:
                wait_until_ready(proc, args.root / LOG_NAME, url, args.startup_timeout)
                title = select_checkpoint(url, args.checkpoint)
                print(f"[live] ready after {time.monotonic() - started:.0f} s, model {title}", flush=True)
                tests_started = time.monotonic()
                code = run_pytest(args, url)
        print(
            f"[live] {args.webui} at {args.root} ({webui_version(args.root)}; {versions}), sd-webui-todo "
            f"{tested}: pytest exit {code} "
            f"in {time.monotonic() - tests_started:.0f} s",
            flush=True,
        )
        return code
    except UsageError as err:
        print(f"run_webui.py: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run_webui.py: interrupted; the server was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
