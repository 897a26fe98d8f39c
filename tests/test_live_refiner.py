"""Opt-in live test: the refiner beside ToDo, on a real webui (A1111, Forge, Forge Neo), over its HTTP API.

At its switch step the webui loads the refiner's checkpoint in the middle of the pass (A1111; Forge and Neo too,
unless Neo's `refiner_fast_sd` loads the weights into the same network). ToDo goes on with the refiner's model
for the steps that remain, says so in the infotext (`refiner 2x/1x`), and leaves both models as they were.

It needs a second SD1.5 checkpoint the webui lists (default file name `todo-random-sd15-refiner.safetensors`,
`$TODO_LIVE_REFINER` for another), made like the first with another seed:
    python tools/live/checkpoint.py --family sd15 --seed 1 \
        WEBUI/models/Stable-diffusion/todo-random-sd15-refiner.safetensors
    python tools/live/run_webui.py --webui forge --root WEBUI --tests tests/test_live_refiner.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import test_live_webui
from test_live_webui import (
    LARGE,
    generate,
    get,
    image_b64,
    infotext,
    pixels,
    todo_args,
    todo_params,
    txt2img_payload,
)

server = test_live_webui.server  # skips without TODO_WEBUI_URL, fails if the webui is unreachable
REFINER_FILE = os.environ.get("TODO_LIVE_REFINER", "todo-random-sd15-refiner.safetensors").strip()
STEPS = 4
SWITCH_AT = 0.5


@pytest.fixture(scope="module")
def refiner(server: str) -> str:
    """The refiner checkpoint's title; it must not be the loaded model."""
    titles = [m["title"] for m in get("/sdapi/v1/sd-models") if Path(m.get("filename", "")).name == REFINER_FILE]
    if not titles:
        pytest.skip(f"the webui does not list {REFINER_FILE} (make it with tools/live/checkpoint.py --seed 1)")
    loaded = str(get("/sdapi/v1/options").get("sd_model_checkpoint", ""))
    if Path(REFINER_FILE).stem in loaded:
        pytest.skip(f"the refiner {REFINER_FILE} is the loaded model; load the base checkpoint")
    return titles[0]


def refined(refiner: str, **extra: Any) -> dict[str, Any]:
    """txt2img at 128 px (level 1: 16x16 tokens), STEPS Euler steps, the refiner from SWITCH_AT of them."""
    payload = txt2img_payload(LARGE, STEPS, refiner_checkpoint=refiner, refiner_switch_at=SWITCH_AT, **extra)
    return generate("txt2img", payload)


def test_refiner_steps_run_with_todo_and_both_models_are_left_clean(refiner: str) -> None:
    plain = refined(refiner)
    assert "Refiner" in infotext(plain), f"the webui ran no refiner: {infotext(plain)}"
    on = refined(refiner, alwayson_scripts=todo_args(True, 2))
    assert todo_params(on).get("ToDo applied") == "2x/1x, refiner 2x/1x", infotext(on)
    assert pixels(image_b64(on)) != pixels(image_b64(plain)), "ToDo changed nothing"
    # Stop at the switch: ToDo in the base model's steps only. Its image differs from the full one, so ToDo's
    # work in the refiner's steps shows in the pixels.
    base_only = refined(refiner, alwayson_scripts=todo_args(True, 2, 0, "nearest-exact", 0, SWITCH_AT))
    assert todo_params(base_only).get("ToDo applied") == "2x/1x", infotext(base_only)
    assert pixels(image_b64(base_only)) != pixels(image_b64(on)), "the refiner's steps ran without ToDo"
    off = refined(refiner, alwayson_scripts=todo_args(False, 2))
    assert "ToDo" not in infotext(off) and pixels(image_b64(off)) == pixels(image_b64(plain))
    after = refined(refiner)
    assert pixels(image_b64(after)) == pixels(image_b64(plain)), "a plain job after ToDo's differs: left behind"
