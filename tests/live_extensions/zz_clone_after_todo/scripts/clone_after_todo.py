"""Test-only webui extension: a script that runs AFTER ToDo and clones the Forge UNet patcher.

This is what every Forge extension that patches the UNet does in `process_before_every_sampling`:
`unet = p.sd_model.forge_objects.unet.clone(); unet.set_model_...(...); p.sd_model.forge_objects.unet = unet`.
Forge's and reForge's `clone()` deep-copy the model options, and with them every patch installed before,
ToDo's included. The patch it adds here is an attn1 output patch that returns its input unchanged, so the
image must be bit-identical with and without this script; only ToDo's behaviour could make it differ.

Its folder name starts with "zz" so that the webui loads it (and runs its hooks) after sd-webui-todo.
On a webui without a UNet patcher (A1111) it does nothing and writes nothing.

API: alwayson_scripts = {"ToDo test: clone after": {"args": [True]}}. When it cloned, the infotext gets
"Clone after ToDo: <n>" with the number of passes it cloned in.
"""

from typing import Any

import gradio as gr
from modules import scripts

TITLE = "ToDo test: clone after"
INFOTEXT_KEY = "Clone after ToDo"


def unchanged_attn1_output(n: Any, extra_options: dict) -> Any:
    """An attn1 output patch that changes nothing."""
    return n


class CloneAfterTodoScript(scripts.Script):
    sorting_priority = 1000  # Forge: last in the UI

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        with gr.Accordion(TITLE, open=False):
            enabled = gr.Checkbox(False, label="Clone the UNet patcher after ToDo (test only)")
        return [enabled]

    def process(self, p: Any, enabled: Any = False, *args: Any) -> None:
        p.extra_generation_params.pop(INFOTEXT_KEY, None)

    def process_before_every_sampling(self, p: Any, enabled: Any = False, *args: Any, **kwargs: Any) -> None:
        forge_objects = getattr(p.sd_model, "forge_objects", None)
        if enabled is not True or forge_objects is None:
            return
        unet = forge_objects.unet.clone()
        unet.set_model_attn1_output_patch(unchanged_attn1_output)
        p.sd_model.forge_objects.unet = unet
        p.extra_generation_params[INFOTEXT_KEY] = int(p.extra_generation_params.get(INFOTEXT_KEY, 0)) + 1
