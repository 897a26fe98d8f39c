"""ToDo beside other extensions, in the stand-in webui: scripts that run after ToDo and change the UNet call.

Live counterparts (real webuis, real third-party extensions) are in tests/test_live_company.py.
"""

from __future__ import annotations

import pytest
import torch

TODO = "ToDo"
WINDOW_HALF = [True, 2, 1, "nearest-exact", 0.0, 0.5]  # factor 2 on level 1, only the first half of the steps

# An extension ordered after ToDo that clones the Forge UNet patcher and adds a patch of its own, as FreeU,
# PAG or Kohya HRFix do. Forge's clone() deep-copies model_options, ToDo's patch and its state with them.
CLONE_AFTER_TODO = '''
from modules import scripts

ENABLED = False


class CloneAfterTodo(scripts.Script):
    def title(self):
        return "Clone after ToDo"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_before_every_sampling(self, p, *args, **kwargs):
        if ENABLED:
            unet = p.sd_model.forge_objects.unet.clone()
            unet.set_model_attn1_output_patch(lambda out, extra_options: out)
            p.sd_model.forge_objects.unet = unet
'''

# An extension that gives every attn1 call its own context, as ControlNet's reference-only does on A1111.
OWN_CONTEXT_AFTER_TODO = '''
from modules import scripts


def own_context(module, args, kwargs):
    return args, {**kwargs, "context": args[0]}


class OwnContext(scripts.Script):
    handles = []

    def title(self):
        return "Own context"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_before_every_sampling(self, p, *args, **kwargs):
        unet = p.sd_model.model.diffusion_model
        for m in unet.modules():
            if type(m).__name__ == "BasicTransformerBlock":
                # prepend: the reference block calls attn1(x, context=...), before any pre-hook sees it
                self.handles.append(m.attn1.register_forward_pre_hook(own_context, with_kwargs=True, prepend=True))

    def postprocess(self, p, processed, *args):
        for h in self.handles:
            h.remove()
        self.handles.clear()
'''


def image(run) -> torch.Tensor:
    return run.processed.images[0]


def todo_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[ToDo]")]


@pytest.mark.parametrize("flavour", ["forge", "reforge", "neo"])
def test_a_clone_made_after_todo_keeps_its_step_window_and_infotext(webui, flavour):
    webui.load_extension_script(start=False, forge_loader=True)
    probe = webui.load_script_text(CLONE_AFTER_TODO, "clone_after.py", "zz-clone-after", forge_loader=True)
    webui.start()
    webui.set_model(webui.make_forge_model(flavour=flavour, legacy=flavour == "reforge"))
    alone = webui.txt2img({TODO: WINDOW_HALF}, steps=4)
    full = webui.txt2img({TODO: [True, 2, 1]}, steps=4)
    probe.ENABLED = True
    cloned = webui.txt2img({TODO: WINDOW_HALF}, steps=4)
    webui.assert_no_errors()
    assert not torch.equal(image(alone), image(full))  # the window matters at these settings
    assert torch.equal(image(cloned), image(alone))  # and the later clone does not lose it
    assert webui.params(cloned.processed)["ToDo applied"] == "2x/1x"
    original = webui.shared.sd_model.forge_objects.unet
    assert not original.model_options["transformer_options"].get("patches", {}).get("attn1_patch")


def test_acting_nowhere_says_why_once_and_claims_nothing(webui, capsys):
    webui.load_extension_script(start=False)
    webui.load_script_text(OWN_CONTEXT_AFTER_TODO, "own_context.py", "zz-own-context")
    webui.start()
    webui.set_model(webui.make_a1111_model())
    run = webui.txt2img({TODO: [True, 2, 1]})
    webui.assert_no_errors()
    lines = todo_lines(capsys)
    assert len(lines) == 1 and "acted nowhere" in lines[0] and "its own context" in lines[0], lines
    assert not any(k.startswith("ToDo") for k in webui.params(run.processed))


def test_a_window_that_holds_no_step_says_so(webui, capsys):
    webui.load_extension_script()
    webui.set_model(webui.make_a1111_model())
    run = webui.txt2img({TODO: [True, 2, 1, "nearest-exact", 0.9, 1.0]}, steps=3)
    lines = todo_lines(capsys)
    assert len(lines) == 1 and "step window" in lines[0], lines
    assert "ToDo applied" not in webui.params(run.processed)


def test_auto_at_native_size_and_a_job_that_acted_say_nothing(webui, capsys):
    webui.load_extension_script()
    webui.set_model(webui.make_a1111_model())
    webui.txt2img({TODO: [True, 0, 0]})  # auto at 64 px: nothing was asked
    acted = webui.txt2img({TODO: [True, 2, 1]})
    assert todo_lines(capsys) == []
    assert webui.params(acted.processed)["ToDo applied"] == "2x/1x"
