"""Opt-in tests that drive a LIVE webui (A1111 >= 1.10, Forge, Forge Neo, reForge) with this extension installed,
over its HTTP API.

Set TODO_WEBUI_URL to the webui's address (e.g. http://127.0.0.1:7860, started with --api or in --test-server
mode) to run them; without it the whole module is skipped. Only the standard library talks to the server.
Requests are kept tiny (64x64 or 128x128, 2-3 Euler steps, fixed seed) so the module runs in minutes on CPU.

One command starts a webui with this working tree installed, runs this module against it and stops it:
    python tools/live/run_webui.py --webui a1111|forge|reforge|neo --root /path/to/webui -- -W error::UserWarning
(a random-weight SD1.5 checkpoint is made for it; see the README, Development). By hand, A1111's own CI server
works too (it needs no model download):
    python launch.py --skip-prepare-environment --skip-torch-cuda-test --test-server --do-not-download-clip \
        --no-half --disable-opt-split-attention --use-cpu all --api-server-stop
    TODO_WEBUI_URL=http://127.0.0.1:7860 python -m pytest tests/test_live_webui.py -v
Its model (test/test_files/empty.pt) has no weights and makes one-colour images whatever the prompt, so there
ToDo's effect on pixels cannot be seen and is checked through its infotext only (a warning says so). Any real or
randomly initialized full checkpoint (--ckpt) checks the pixels too; `-W error::UserWarning` then insists on it.

The public API under test is the script's args, in this order (lib_todo/script_args.py):
enabled, factor (0 = auto), factor_level2, method, start, stop, hires_mode, hires_factor.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import urllib.error
import urllib.request
import warnings
import zlib
from typing import Any

import pytest

BASE_URL = os.environ.get("TODO_WEBUI_URL", "").strip().rstrip("/")
if not BASE_URL:
    pytest.skip(
        "live webui tests are opt-in: set TODO_WEBUI_URL (e.g. http://127.0.0.1:7860) to a running webui "
        "with sd-webui-todo installed",
        allow_module_level=True,
    )

TIMEOUT_S = float(os.environ.get("TODO_WEBUI_TIMEOUT", "900"))
SCRIPT = "ToDo"  # the API finds alwayson scripts by lower-cased title, so any case works
SCRIPT_NAME = "todo"  # script.name as /sdapi/v1/scripts and /sdapi/v1/script-info list it
ARG_LABELS = (  # the UI labels of args 2..8, in the public order
    "Factor (0 = auto, 1 = off)",
    "Level 2 factor (0 = auto, 1 = off)",
    "Method",
    "Start at",
    "Stop at",
    "Hires pass",
    "Hires factor (0 = auto, 1 = off)",
)
KINDS = ("txt2img", "img2img")
SMALL = 64  # latent 8x8: level 1 has 8x8 tokens, level 2 4x4; explicit factors act, auto ones are 1x
LARGE = 128  # latent 16x16: level 1 has 16x16 tokens, factor 2 takes keys/values to 8x8
PROMPT = "a red cube on a wooden table"
OTHER_PROMPT = "a blue sphere floating in space"
INFOTEXT_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # as A1111 parses it


def todo_args(
    enabled: Any = True,
    factor: Any = 0,
    factor_level2: Any = 0,
    method: Any = "nearest-exact",
    start: Any = 0.0,
    stop: Any = 1.0,
    hires_mode: Any = "same",
    hires_factor: Any = 0,
) -> dict[str, Any]:
    """`alwayson_scripts` for ToDo with all eight args in their public order."""
    args = [enabled, factor, factor_level2, method, start, stop, hires_mode, hires_factor]
    return {SCRIPT: {"args": args}}


# HTTP, standard library only.


def call(method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body) of one request; HTTP errors are returned, not raised."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(BASE_URL + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body.decode(errors="replace")


def get(path: str) -> Any:
    status, body = call("GET", path)
    assert status == 200, f"GET {path}: HTTP {status}: {body}"
    return body


def generate(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST /sdapi/v1/{kind} and check the answer holds exactly one image."""
    status, body = call("POST", f"/sdapi/v1/{kind}", payload)
    assert status == 200, f"{kind}: HTTP {status}: {body}"
    assert isinstance(body, dict) and len(body.get("images") or []) == 1, f"{kind}: expected one image, got {body}"
    return body


# What came back: image, pixels, infotext.


def image_b64(response: dict[str, Any]) -> str:
    return response["images"][0]


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the webui did not answer with a PNG (samples_format must be png)"
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_size(b64: str) -> tuple[int, int]:
    ihdr = dict(png_chunks(base64.b64decode(b64)))[b"IHDR"]
    return struct.unpack(">II", ihdr[:8])


def pixels(b64: str) -> bytes:
    """The image's pixel data (its inflated IDAT), free of the infotext the webui embeds in the PNG.

    The PNG bytes of two images always differ when their infotexts do; comparing pixels compares images.
    """
    idat = b"".join(data for kind, data in png_chunks(base64.b64decode(b64)) if kind == b"IDAT")
    return zlib.decompress(idat)


def unfiltered_rows(b64: str) -> tuple[list[bytes], int]:
    """The rows of an 8-bit RGB/RGBA PNG as raw bytes (PNG's per-row filters undone), and bytes per pixel."""
    chunks = dict(png_chunks(base64.b64decode(b64)))
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format: depth {depth}, colour type {colour}"
    bpp = 3 if colour == 2 else 4
    data, stride, prev, rows = pixels(b64), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        kind, row = data[y * (stride + 1)], bytearray(data[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left, up = row[i - bpp] if i >= bpp else 0, prev[i]
            up_left = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(bytes(row))
        prev = row
    return rows, bpp


def is_one_colour(b64: str) -> bool:
    """Whether every pixel of an 8-bit RGB/RGBA PNG is the same."""
    rows, bpp = unfiltered_rows(b64)
    first = rows[0][:bpp]
    return all(row == first * (len(row) // bpp) for row in rows)


def mean_abs_difference(a: str, b: str) -> float:
    """Mean absolute difference of two same-size 8-bit PNGs, per channel value (0-255)."""
    rows_a, _ = unfiltered_rows(a)
    rows_b, _ = unfiltered_rows(b)
    assert len(rows_a) == len(rows_b) and len(rows_a[0]) == len(rows_b[0]), "images of different sizes"
    total = sum(abs(x - y) for ra, rb in zip(rows_a, rows_b, strict=True) for x, y in zip(ra, rb, strict=True))
    return total / (len(rows_a) * len(rows_a[0]))


def infotext(response: dict[str, Any]) -> str:
    """The generation parameters text of the first image: info JSON "infotexts"[0], else its "parameters"."""
    info = response.get("info")
    info = json.loads(info) if isinstance(info, str) else info or {}
    texts = info.get("infotexts") or []
    if texts:
        return texts[0]
    if isinstance(info.get("parameters"), str):
        return info["parameters"]
    for kind, data in png_chunks(base64.b64decode(image_b64(response))):  # embedded in the PNG as tEXt
        if kind == b"tEXt" and data.startswith(b"parameters\0"):
            return data.split(b"\0", 1)[1].decode("latin-1")
    raise AssertionError(f"no infotext in the response: {info}")


def infotext_params(text: str) -> dict[str, str]:
    """The "Key: value" pairs of the infotext's last line, unquoted, as A1111's parser reads them."""
    params = {}
    for key, value in INFOTEXT_PARAM.findall(text.strip().splitlines()[-1]):
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = json.loads(value)
        params[key.strip()] = value
    return params


def todo_params(response: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in infotext_params(infotext(response)).items() if k.startswith("ToDo")}


# Requests.


def txt2img_payload(size: int = SMALL, steps: int = 2, prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "negative_prompt": "",
        "seed": 1234,
        "subseed": -1,
        "subseed_strength": 0,
        "sampler_name": "Euler",
        "steps": steps,
        "cfg_scale": 5,
        "width": size,
        "height": size,
        "batch_size": 1,
        "n_iter": 1,
        "save_images": False,
        "send_images": True,
        **extra,
    }


def init_image_b64(size: int) -> str:
    """A small RGB gradient PNG, made with zlib and struct (no Pillow needed), as a data URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(
        b"\0" + bytes(v for x in range(size) for v in (x * 255 // size, y * 255 // size, 128)) for y in range(size)
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def img2img_payload(size: int = SMALL, steps: int = 3, prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    payload = txt2img_payload(size=size, steps=steps, prompt=prompt, **extra)
    payload.update({"init_images": [init_image_b64(size)], "denoising_strength": 0.75, "resize_mode": 0})
    return payload


def payload_for(kind: str, **kw: Any) -> dict[str, Any]:
    return txt2img_payload(**kw) if kind == "txt2img" else img2img_payload(**kw)


@pytest.fixture(scope="module")
def server() -> str:
    try:
        status, body = call("GET", "/sdapi/v1/scripts")
    except (urllib.error.URLError, OSError) as err:
        pytest.fail(f"cannot reach the webui at TODO_WEBUI_URL={BASE_URL}: {err}")
    if status == 404:
        pytest.fail(f"{BASE_URL} has no /sdapi/v1 API: start the webui with --api (or --test-server / --nowebui)")
    assert status == 200, f"{BASE_URL}: HTTP {status}: {body}"
    return BASE_URL


@pytest.fixture(scope="module")
def plain(server: str) -> dict[str, str]:
    """Per kind: the SMALL image (base64 PNG) of the request without alwayson_scripts."""
    return {kind: image_b64(generate(kind, payload_for(kind))) for kind in KINDS}


# The script as the API lists it.


def test_scripts_lists_todo_for_txt2img_and_img2img(server: str) -> None:
    listed = get("/sdapi/v1/scripts")
    assert SCRIPT_NAME in listed["txt2img"], listed["txt2img"]
    assert SCRIPT_NAME in listed["img2img"], listed["img2img"]


def test_script_info_has_eight_args_in_public_order(server: str) -> None:
    infos = [info for info in get("/sdapi/v1/script-info") if info["name"] == SCRIPT_NAME]
    assert sorted(info["is_img2img"] for info in infos) == [False, True], infos
    for info in infos:
        assert info["is_alwayson"] is True
        args = info["args"]
        assert len(args) == 8, args
        assert args[0]["value"] is False, "ToDo must be off by default"
        assert tuple(arg["label"] for arg in args[1:]) == ARG_LABELS
        assert args[1]["value"] == 0 and args[2]["value"] == 0 and args[7]["value"] == 0, "factors default to auto"
        assert args[1]["minimum"] == 0 and args[1]["maximum"] == 8
        assert "nearest-exact" in args[3]["choices"] and args[3]["value"] == "nearest-exact"
        assert (args[4]["value"], args[5]["value"]) == (0, 1)
        assert set(args[6]["choices"]) == {"same", "own factor", "off", "only"} and args[6]["value"] == "same"


# Generation: off is a no-op, on acts and says so, bad args never break a job, cleanup between jobs.
# The PNG bytes the webui returns embed the infotext: equal base64 strings mean the same pixels AND the same
# infotext, so no trace of ToDo.


@pytest.mark.parametrize("kind", KINDS)
def test_disabled_gives_the_same_image_bytes_as_no_script(plain: dict[str, str], kind: str) -> None:
    off = generate(kind, payload_for(kind, alwayson_scripts=todo_args(False, 2, 2, "avg-pool", 0, 1, "same", 0)))
    assert "ToDo" not in infotext(off)
    assert image_b64(off) == plain[kind]
    off_short = generate(kind, payload_for(kind, alwayson_scripts={SCRIPT: {"args": [False]}}))
    assert image_b64(off_short) == plain[kind]


def model_is_degenerate(kind: str, size: int, image: str) -> bool:
    """Whether the server's model makes images that no change of attention can alter.

    A1111's --test-server loads test/test_files/empty.pt: no weights at all, so the UNet and the text encoder run
    on uninitialized memory, produce NaN or nothing, and every image is a single colour (black or grey) whatever
    the prompt; ToDo cannot change such pixels. A real model's image is neither one colour nor the same for
    another prompt.
    """
    if is_one_colour(image):
        return True
    other = image_b64(generate(kind, payload_for(kind, size=size, prompt=OTHER_PROMPT)))
    return pixels(other) == pixels(image)


@pytest.mark.parametrize("kind", KINDS)
def test_factor_2_acts_and_writes_infotext(server: str, kind: str) -> None:
    off = generate(kind, payload_for(kind, size=LARGE))
    on = generate(kind, payload_for(kind, size=LARGE, alwayson_scripts=todo_args(True, 2)))
    assert png_size(image_b64(on)) == (LARGE, LARGE)
    text = infotext(on)
    assert "ToDo factor: 2" in text and "ToDo applied" in text, text
    params = todo_params(on)
    # Level 2 is auto: 1x at 128 px (SD1.x, SD2.x and SDXL alike), so only level 1 acts.
    assert params["ToDo factor"] == "2" and params["ToDo applied"] == "2x/1x", params
    if pixels(image_b64(on)) == pixels(image_b64(off)):
        # On a model whose images ignore attention (the test server's empty.pt) only the infotext can be checked.
        assert model_is_degenerate(kind, LARGE, image_b64(off)), "ToDo at factor 2 left the image unchanged"
        warnings.warn(f"{kind}: the server's model ignores attention; ToDo checked by its infotext only", stacklevel=1)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_left_installed_after_a_job(plain: dict[str, str], kind: str) -> None:
    on = generate(kind, payload_for(kind, alwayson_scripts=todo_args(True, 2, 2, "avg-pool")))
    assert todo_params(on).get("ToDo applied") == "2x/2x", infotext(on)  # at 64 px level 2 has 4x4 tokens
    after = generate(kind, payload_for(kind))
    assert after["images"][0] == plain[kind], "the job after a ToDo job was not the same as before it"


@pytest.mark.parametrize("kind", KINDS)
def test_auto_factors_leave_a_small_image_alone(plain: dict[str, str], kind: str) -> None:
    """Auto factors (0) resolve to 1x on both levels at 64x64: ToDo does nothing and writes no infotext."""
    auto = generate(kind, payload_for(kind, alwayson_scripts=todo_args(True, 0, 0)))
    assert image_b64(auto) == plain[kind], infotext(auto)


BAD_ARGS = {
    # Each also asks for a factor that would act at 64 px, so "ToDo ran with the good values" would show.
    "factor-banana": todo_args(True, "banana", 2),
    "method": todo_args(True, 2, 2, "no-such-method"),
    "start-above-stop": todo_args(True, 2, 2, "nearest-exact", 0.8, 0.2),
    "enabled-maybe": todo_args("maybe", 2, 2),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_args_still_generate_without_todo(plain: dict[str, str], kind: str, case: str) -> None:
    response = generate(kind, payload_for(kind, alwayson_scripts=BAD_ARGS[case]))
    assert "ToDo" not in infotext(response), infotext(response)
    assert image_b64(response) == plain[kind]


def hires_upscaler() -> str:
    """An upscaler the webui's hires fix accepts: "Latent" (or another latent mode) where it has latent modes,
    else an image upscaler that needs no model file. Forge Neo, for one, has no latent upscale modes.
    """
    status, modes = call("GET", "/sdapi/v1/latent-upscale-modes")
    latent = [mode["name"] for mode in modes] if status == 200 and isinstance(modes, list) else []
    if latent:
        return "Latent" if "Latent" in latent else latent[0]
    names = [upscaler["name"] for upscaler in get("/sdapi/v1/upscalers")]
    for name in ("Lanczos", "Nearest", "None"):  # built in, no model file
        if name in names:
            return name
    pytest.fail(f"no latent upscale mode and none of Lanczos/Nearest/None among the upscalers: {names}")


def test_hires_only_mode_acts_on_the_hires_pass(server: str) -> None:
    payload = txt2img_payload(
        size=SMALL,
        enable_hr=True,
        hr_scale=2,
        hr_upscaler=hires_upscaler(),
        hr_second_pass_steps=2,
        denoising_strength=0.5,
        # Forge's API fails a hires request without this field (Forge issue #2680); A1111 ignores it.
        hr_additional_modules=["Use same choices"],
        alwayson_scripts=todo_args(True, 2, 0, "nearest-exact", 0, 1, "only"),
    )
    response = generate("txt2img", payload)
    assert png_size(image_b64(response)) == (2 * SMALL, 2 * SMALL)
    params = todo_params(response)
    assert "hires" in params.get("ToDo applied", ""), infotext(response)
    assert params["ToDo applied"] == "hires 2x/1x", params  # nothing on the first pass; level 2 auto: 1x
    assert params["ToDo hires"] == "only" and params["ToDo factor"] == "2", params
