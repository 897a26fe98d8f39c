"""Opt-in live tests: ToDo beside the extensions users run with it (the company matrix), on a LIVE webui.

Like tests/test_live_webui.py (whose HTTP helpers this module imports), everything is skipped unless
TODO_WEBUI_URL points at a running webui (A1111 >= 1.10, Forge, reForge or Forge Neo, started with --api) with
sd-webui-todo installed and a real or random-weight checkpoint loaded. Third-party extensions are installed into
the webui under test, never committed here; each companion below is skipped when the webui does not have it (found
through /sdapi/v1/scripts, in txt2img or img2img where it is offered) or does not serve the loaded model family
(TODO_LIVE_FAMILY: sd15, sdxl, flux, zimage). Requests are small (64, 128 or 384 px, 2 Euler steps).

Per companion, with the companion on in every request:
- an image comes back with ToDo off and with ToDo on (factor 2 on both levels);
- ToDo acts where it can (its infotext says what ran, and the pixels change), and where it cannot (a companion
  that gives every self-attention its own context, one that tiles self-attention, ToMe on the same layers) the
  infotext claims nothing and the console says why in a `[ToDo]` line;
- ToDo off gives the same pixels as the companion alone: alone in this server (no ToDo args), and, when
  TODO_COMPANY_BASELINE names a file recorded from the same webui WITHOUT sd-webui-todo installed, alone there;
- nothing is left behind: the plain job after the ToDo job has the same pixels as the plain job before.
And with tests/live_extensions/zz_clone_after_todo installed on a Forge-family webui: a script that clones the
UNet patcher after ToDo changes nothing (same image; the infotext still says ToDo ran; Stop at still holds).

Environment:
- TODO_WEBUI_URL: the webui (required).
- TODO_WEBUI_LOG: the file the webui's console goes to. The console lines are checked from it; without it only
  the infotext is checked and the console lines are to be read by hand.
- TODO_COMPANY_RECORD: against a webui WITHOUT sd-webui-todo: write the pixel digests of each companion alone
  (and of the plain job) to this JSON file; the ToDo tests skip.
- TODO_COMPANY_BASELINE: such a JSON file, to compare "ToDo off" with the webui without ToDo.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import test_live_webui
from test_live_webui import (
    SCRIPT_NAME,
    call,
    generate,
    get,
    image_b64,
    img2img_payload,
    infotext,
    init_image_b64,
    pixels,
    png_size,
    todo_args,
    todo_params,
    txt2img_payload,
)

server = test_live_webui.server  # the fixture: skips without TODO_WEBUI_URL, fails if the webui is unreachable
LOG_PATH = os.environ.get("TODO_WEBUI_LOG", "").strip()
RECORD_PATH = os.environ.get("TODO_COMPANY_RECORD", "").strip()
BASELINE_PATH = os.environ.get("TODO_COMPANY_BASELINE", "").strip()
TODO_ON = todo_args(True, 2, 2)  # factor 2 on both levels: acts at 64 px (level 1 8x8 -> 4x4, level 2 4x4 -> 2x2)
TODO_OFF = todo_args(False, 2, 2, "avg-pool")  # off, with values that would act if they were read
TODO_LINE = re.compile(r"^.*\[ToDo\].*$", re.MULTILINE)
CLONE_SCRIPT = "todo test: clone after"  # tests/live_extensions/zz_clone_after_todo
CLONE_KEY = "Clone after ToDo"
# The model family loaded (tools/live/run_webui.py --family sets it): each companion runs only on the families it
# serves, and a family's requests take its own fields (Flux dev: CFG 1, distilled guidance).
FAMILY = os.environ.get("TODO_LIVE_FAMILY", "sd15").strip() or "sd15"
FAMILY_REQUEST = {
    "flux": {"sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1, "distilled_cfg_scale": 3.5},
    "zimage": {"sampler_name": "Euler", "scheduler": "Simple", "cfg_scale": 1},  # Z-Image Turbo: no negative pass
}
UNETS = ("sd15", "sdxl")


def base_payload(kind: str, size: int, steps: int = 2, **extra: Any) -> dict[str, Any]:
    """The plain request of this kind and size for the loaded family (img2img from a gradient image)."""
    make = txt2img_payload if kind == "txt2img" else img2img_payload
    return {**make(size=size, steps=steps, **extra), **FAMILY_REQUEST.get(FAMILY, {})}


def reference_image() -> str:
    """A 64 px gradient as plain base64 (both ControlNets take it without a data-URL prefix)."""
    return init_image_b64(64).split(",", 1)[1]


@dataclass(frozen=True)
class Companion:
    """An extension (or built-in) run beside ToDo, and how to switch it on through the API.

    script: its alwayson script name as /sdapi/v1/scripts lists it (lower-cased title), if it has one;
    args: its alwayson args that switch it on; settings: override_settings that switch it on (each key an
    option of the extension that `needs` names, or a built-in one; /sdapi/v1/options lists only the settings that
    were ever set, so it cannot tell); todo: "acts" where ToDo can act beside it, "says why" where it cannot and must
    say so in the console, "either" where that depends on how the webui implements the companion.
    """

    name: str
    todo: str
    script: str | None = None
    args: tuple[Any, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # a script that must be listed, for a companion driven by settings only
    defaults: dict[str, Any] = field(default_factory=dict)  # each setting's default, put back after each job
    size: int = 64
    steps: int = 2
    kind: str = "txt2img"  # or img2img, for a companion the webui offers there only
    families: tuple[str, ...] = UNETS  # the model families it serves

    @property
    def job(self) -> tuple[str, int]:
        """(kind, size) of its jobs: the plain job it is compared with is the same."""
        return self.kind, self.size

    def alwayson(self) -> dict[str, Any]:
        return {self.script: {"args": list(self.args)}} if self.script else {}

    def payload(self, todo: dict[str, Any] | None) -> dict[str, Any]:
        """The request with this companion on, and ToDo's args when given."""
        extra: dict[str, Any] = {}
        scripts = {**self.alwayson(), **(todo or {})}
        if scripts:
            extra["alwayson_scripts"] = scripts
        if self.settings:
            extra["override_settings"] = dict(self.settings)
            extra["override_settings_restore_afterwards"] = True
        return base_payload(self.kind, self.size, self.steps, **extra)


def controlnet_reference_unit() -> dict[str, Any]:
    """One ControlNet unit running the reference_only preprocessor (no ControlNet model needed)."""
    return {
        "enabled": True,
        "module": "reference_only",
        "model": "None",
        "image": reference_image(),
        "weight": 1.0,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": "Balanced",
        "resize_mode": "Crop and Resize",
        "processor_res": 64,
        "threshold_a": 0.5,
        "pixel_perfect": False,
        "save_detected_map": False,  # else the answer carries the preprocessor's map as a second image
    }


COMPANIONS = [
    # A1111 extensions (ljleb FreeU, wcde Kohya hires fix, Tiled Diffusion, DeepCache standalone).
    # FreeU normalises a channel-mean map by its max - min: a 1x1 map (64 px, deepest level) gives NaN alone.
    Companion("FreeU (sd-webui-freeu)", "acts", "freeu", (True,), size=128),
    Companion(
        "Kohya Deep Shrink (sd-webui-kohya-hiresfix)",
        "acts",
        "kohya hires.fix",
        # enable, one pass only, depth 3/4, stop at 0.5/0.5, scaler, down 0.5, up 2, no smooth, no early out
        (True, True, 3, 4, 0.5, 0.5, "bicubic", 0.5, 2.0, False, False),
    ),
    Companion(
        "Tiled Diffusion MultiDiffusion",
        "acts",
        "tiled diffusion",
        # enabled, method, overwrite size, keep input size, w, h, latent tile 6x6, overlap 4, 4 tiles per batch:
        # a 64 px image (latent 8x8) in 2x2 tiles, one UNet call per step
        (True, "MultiDiffusion", False, True, 1024, 1024, 6, 6, 4, 4),
    ),
    Companion(
        "DeepCache (sd-webui-deepcache-standalone)",
        "acts",
        settings={
            "deepcache_enable_pass": "both passes",
            "deepcache_cache_enable_step_percentage": 0.0,
            "deepcache_full_run_step_rate": 2,  # odd steps reuse the deep features of the step before
        },
        needs="deepcache",
        defaults={
            "deepcache_enable_pass": "disable",
            "deepcache_cache_enable_step_percentage": 0.4,
            "deepcache_full_run_step_rate": 5,
        },
        steps=20,  # DeepCache reuses a cache only within 50 of 1000 timesteps: never at 2 steps
    ),
    # Settings built into the webuis.
    Companion(
        "ToMe (token_merging_ratio 0.5)",
        "acts",
        settings={"token_merging_ratio": 0.5},
        defaults={"token_merging_ratio": 0.0},
    ),
    Companion(
        "HyperTile U-Net",
        "says why",
        settings={"hypertile_enable_unet": True, "hypertile_max_tile_unet": 32},  # 128 px in 32 px tiles
        needs="hypertile",
        defaults={"hypertile_enable_unet": False, "hypertile_max_tile_unet": 256},
        size=128,
    ),
    # Forge built-ins (extensions-builtin/sd_forge_*).
    Companion("Forge FreeU Integrated", "acts", "freeu integrated (sd 1.x, sd 2.x, sdxl)", (True,), size=128),
    Companion("Forge Kohya HRFix Integrated", "acts", "kohya hrfix integrated", (True, 3, 2.0, 0.0, 0.5)),
    Companion(
        "Forge MultiDiffusion Integrated",
        "acts",
        "multidiffusion integrated",
        (True, "MultiDiffusion", 48, 48, 32, 4),  # 2x2 tiles of 48 px (latent 6x6), all four in one batch
    ),
    # Forge Neo's MultiDiffusion Integrated is offered in img2img only, with tiles of 256 px or more: a 384 px image
    # in 2x2 tiles of 256 px overlapping by 128, all four in one batch. A UNet function wrapper, as ToDo's on a DiT.
    Companion(
        "MultiDiffusion Integrated, img2img 384 px",
        "either",
        "multidiffusion integrated",
        (True, "MultiDiffusion", 256, 256, 128, 4),
        size=384,
        kind="img2img",
        families=("sd15", "sdxl", "flux", "zimage"),
    ),
    Companion("Forge PerturbedAttentionGuidance", "acts", "perturbedattentionguidance integrated", (True, 3.0)),
    # SAG masks where the middle block's self-attention sums above 1: never on its 1x1 map at 64 px.
    Companion(
        "Forge SelfAttentionGuidance",
        "acts",
        "selfattentionguidance integrated (sd 1.x, sd 2.x, sdxl)",
        (True,),
        size=128,
    ),
    # reForge built-ins whose titles differ from Forge's.
    Companion("reForge FreeU Integrated", "acts", "freeu integrated", (True,), size=128),
    Companion("reForge SAG Integrated", "acts", "selfattentionguidance integrated", (True,), size=128),
    # enabled, tile 32 px, swap 2, max depth 0, no depth scaling: an attn1 patch, so ToDo may act or keep out
    Companion("reForge HyperTile Integrated", "either", "hypertile integrated", (True, 32, 2, 0, False), size=128),
    # Last: after one sd-webui-controlnet reference_only job, A1111's ToMe no longer changes any image for the rest
    # of the session (seen on A1111 1.10.1 without ToDo too), so every other companion runs before it.
    # sd-webui-controlnet's reference_only calls each self-attention with a context of its own (the reference
    # bank): ToDo keeps out and says why. Forge's built-in one is an attn1 replace that gets the keys/values ToDo
    # already downsampled (its recorded bank included): ToDo acts there.
    Companion("ControlNet reference_only", "either", "controlnet", (controlnet_reference_unit(),)),
]
IDS = [c.name for c in COMPANIONS]


# What the server has.


@pytest.fixture(scope="module")
def listed(server: str) -> dict[str, set[str]]:
    """Per kind (txt2img, img2img): the scripts the webui offers, lower-cased (some set `name` in capitals)."""
    found = get("/sdapi/v1/scripts")
    return {kind: {name.lower() for name in found[kind]} for kind in ("txt2img", "img2img")}


@pytest.fixture(scope="module")
def scripts_listed(listed: dict[str, set[str]]) -> set[str]:
    return listed["txt2img"]


@pytest.fixture(scope="module")
def todo_installed(scripts_listed: set[str]) -> bool:
    return SCRIPT_NAME in scripts_listed


def require(companion: Companion, listed: dict[str, set[str]]) -> None:
    """Skip unless the webui under test has this companion, where it is offered, for the loaded family."""
    if FAMILY not in companion.families:
        pytest.skip(f"{companion.name} serves {', '.join(companion.families)}, not the loaded {FAMILY}")
    for script in (companion.script, companion.needs):
        if script and script not in listed[companion.kind]:
            pytest.skip(f"this webui offers no script {script!r} in {companion.kind}")
    if companion.script == "controlnet" and not controlnet_has_reference(listed[companion.kind]):
        pytest.skip("this webui's ControlNet lists no reference_only preprocessor")


def controlnet_has_reference(scripts_listed: set[str]) -> bool:
    status, body = call("GET", "/controlnet/module_list")
    if status != 200 or not isinstance(body, dict):
        return True  # no listing route (Forge's built-in): try it
    return "reference_only" in (body.get("module_list") or [])


# The server's console.


class Console:
    """New lines of the server's log file since the last `mark()` (nothing without TODO_WEBUI_LOG)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.offset = 0

    def mark(self) -> None:
        if self.path is not None:
            self.offset = self.path.stat().st_size

    def todo_lines(self) -> list[str]:
        if self.path is None:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", errors="replace")
        return [line.strip() for line in TODO_LINE.findall(text)]


@pytest.fixture(scope="module")
def console(server: str) -> Console:
    return Console(LOG_PATH)


# Runs, made once per module and shared by the tests that check them.


def companion_job(companion: Companion, todo: dict[str, Any] | None) -> dict[str, Any]:
    """One job with the companion on; the settings it overrode are put back after it.

    Forge main keeps `override_settings` after an API job (override_settings_restore_afterwards is not
    honoured there), so without this a ToMe job would leave ToMe on for every job after it.
    """
    listed = get("/sdapi/v1/options") if companion.settings else {}
    before = {key: listed.get(key, companion.defaults[key]) for key in companion.settings}
    try:
        return generate(companion.kind, companion.payload(todo))
    finally:
        if before:
            status, body = call("POST", "/sdapi/v1/options", before)
            assert status == 200, f"could not put the settings back: HTTP {status}: {body}"


def digest(b64: str) -> str:
    return hashlib.sha256(pixels(b64)).hexdigest()


@dataclass
class Run:
    off: dict[str, Any]  # companion on, ToDo args present and off
    on: dict[str, Any]  # companion on, ToDo on
    on_console: list[str]  # [ToDo] console lines written during the ToDo-on job
    after: str  # the plain job after the ToDo-on job (base64 PNG)
    alone: str | None = None  # companion on, no ToDo args (base64 PNG), made on demand


class PlainJobs(dict):
    """The plain job (no companion, no ToDo) per (kind, size), made the first time it is asked for."""

    def __missing__(self, job: tuple[str, int]) -> str:
        return self.make(job)

    def make(self, job: tuple[str, int]) -> str:
        """The plain job of this kind and size, made now if it was not made yet."""
        if job not in self:
            self[job] = image_b64(generate(job[0], base_payload(*job)))
        return self[job]


def job_key(job: tuple[str, int]) -> str:
    """A plain job's name in the recorded digests: "64" for txt2img (as recorded before), "img2img-384"."""
    kind, size = job
    return str(size) if kind == "txt2img" else f"{kind}-{size}"


@pytest.fixture(scope="module")
def plain_before(server: str) -> PlainJobs:
    """The plain jobs before any companion ran: 64 px now, other sizes before the first companion of that size."""
    jobs = PlainJobs()
    jobs.make(("txt2img", 64))
    return jobs


@pytest.fixture(scope="module")
def runs(plain_before: PlainJobs, console: Console) -> dict[str, Run]:
    return {}


def run_for(companion: Companion, runs: dict[str, Run], console: Console, plain_before: PlainJobs) -> Run:
    if companion.name not in runs:
        plain_before.make(companion.job)  # before the companion runs
        off = companion_job(companion, TODO_OFF)
        console.mark()
        on = companion_job(companion, TODO_ON)
        lines = console.todo_lines()
        after = image_b64(generate(companion.kind, base_payload(*companion.job)))
        runs[companion.name] = Run(off, on, lines, after, image_b64(companion_job(companion, None)))
    return runs[companion.name]


def alone(companion: Companion, run: Run) -> str:
    if run.alone is None:
        run.alone = image_b64(companion_job(companion, None))
    return run.alone


@pytest.fixture
def companion_run(
    request: pytest.FixtureRequest,
    listed: dict[str, set[str]],
    todo_installed: bool,
    runs: dict[str, Run],
    console: Console,
    plain_before: PlainJobs,
) -> tuple[Companion, Run]:
    companion: Companion = request.param
    require(companion, listed)
    if not todo_installed:
        pytest.skip("sd-webui-todo is not installed in this webui (recording mode?)")
    return companion, run_for(companion, runs, console, plain_before)


def companions_param(test: Any) -> Any:
    return pytest.mark.parametrize("companion_run", COMPANIONS, ids=IDS, indirect=True)(test)


# The tests.


@companions_param
def test_images_with_todo_off_and_on(companion_run: tuple[Companion, Run]) -> None:
    companion, run = companion_run
    for response in (run.off, run.on):
        assert png_size(image_b64(response)) == (companion.size, companion.size)
    assert "ToDo" not in infotext(run.off), infotext(run.off)


@companions_param
def test_todo_acts_or_says_why(companion_run: tuple[Companion, Run]) -> None:
    companion, run = companion_run
    applied = todo_params(run.on).get("ToDo applied", "")
    print(f"\n{companion.name}: ToDo applied {applied or '-'}; console: {run.on_console or '-'}")
    if applied or companion.todo == "acts":
        assert applied, f"ToDo did not act beside {companion.name}: {infotext(run.on)}; console: {run.on_console}"
        assert companion.todo != "says why", f"ToDo claims it acted beside {companion.name}: {infotext(run.on)}"
        assert pixels(image_b64(run.on)) != pixels(image_b64(run.off)), "ToDo acted but the image did not change"
        return
    assert pixels(image_b64(run.on)) == pixels(image_b64(run.off)), "ToDo claims nothing but changed the image"
    if not LOG_PATH:
        pytest.skip("set TODO_WEBUI_LOG to the server's log file to check the console line")
    assert run.on_console, f"ToDo could not act beside {companion.name} and said nothing in the console"


@companions_param
def test_todo_off_is_the_companion_alone(companion_run: tuple[Companion, Run]) -> None:
    companion, run = companion_run
    assert pixels(image_b64(run.off)) == pixels(alone(companion, run))
    if BASELINE_PATH:
        recorded = json.loads(Path(BASELINE_PATH).read_text())["companions"].get(companion.name)
        if recorded is None:
            pytest.skip(f"{BASELINE_PATH} has no digest for {companion.name}")
        assert digest(image_b64(run.off)) == recorded, "ToDo off differs from the webui without ToDo"


@companions_param
def test_the_companion_itself_acts(companion_run: tuple[Companion, Run], plain_before: PlainJobs) -> None:
    """A companion that changed nothing would make the other rows of its test meaningless."""
    companion, run = companion_run
    assert pixels(alone(companion, run)) != pixels(plain_before[companion.job]), f"{companion.name} did nothing"


@companions_param
def test_nothing_left_behind(companion_run: tuple[Companion, Run], plain_before: PlainJobs) -> None:
    companion, run = companion_run
    assert pixels(run.after) == pixels(plain_before[companion.job]), "the plain job after differs from before"


def test_plain_job_is_the_webui_without_todo(plain_before: PlainJobs, todo_installed: bool) -> None:
    if not BASELINE_PATH or not todo_installed:
        pytest.skip("set TODO_COMPANY_BASELINE to a digest file recorded without sd-webui-todo")
    recorded = json.loads(Path(BASELINE_PATH).read_text())["plain"]
    for job, b64 in plain_before.items():
        if job_key(job) not in recorded:
            continue  # a companion the recording skipped
        assert digest(b64) == recorded[job_key(job)], f"the plain {job} job differs from the webui without ToDo"


# A script after ToDo that clones the UNet patcher (Forge family; tests/live_extensions/zz_clone_after_todo).


def test_a_later_clone_of_the_unet_patcher_changes_nothing(scripts_listed: set[str], todo_installed: bool) -> None:
    if CLONE_SCRIPT not in scripts_listed or not todo_installed:
        pytest.skip("install tests/live_extensions/zz_clone_after_todo (and sd-webui-todo) to run this")
    todo = todo_args(True, 2, 2, "nearest-exact", 0.0, 0.5)  # Stop at 0.5: the second of two steps runs plain

    def job(clone: bool, scripts: dict[str, Any]) -> dict[str, Any]:
        extra = {CLONE_SCRIPT: {"args": [True]}} if clone else {}
        return generate("txt2img", base_payload("txt2img", 64, alwayson_scripts={**scripts, **extra}))

    cloned = job(True, todo)
    if CLONE_KEY not in infotext(cloned):
        pytest.skip("the clone script found no UNet patcher to clone (not a Forge-family webui)")
    alone_ = job(False, todo)
    whole_window = job(False, todo_args(True, 2, 2))
    assert pixels(image_b64(alone_)) != pixels(image_b64(whole_window)), "Stop at 0.5 made no difference"
    assert todo_params(cloned).get("ToDo applied"), f"no ToDo in the infotext after a clone: {infotext(cloned)}"
    assert todo_params(cloned) == todo_params(alone_)
    assert pixels(image_b64(cloned)) == pixels(image_b64(alone_)), "a later clone changed ToDo's image"


# Recording the webui without ToDo.


def test_record_the_webui_without_todo(
    listed: dict[str, set[str]], todo_installed: bool, plain_before: PlainJobs
) -> None:
    if not RECORD_PATH:
        pytest.skip("TODO_COMPANY_RECORD is not set")
    assert not todo_installed, "record against a webui WITHOUT sd-webui-todo installed"
    companions = {}
    for companion in COMPANIONS:
        try:
            require(companion, listed)
        except pytest.skip.Exception:
            continue
        plain_before.make(companion.job)
        companions[companion.name] = digest(image_b64(companion_job(companion, None)))
    record = {"plain": {job_key(job): digest(b64) for job, b64 in plain_before.items()}, "companions": companions}
    Path(RECORD_PATH).write_text(json.dumps(record, indent=1) + "\n")
