"""One webui generation job: its settings, and installing ToDo per sampling pass, releasing it, finishing.

Kept out of the script: A1111 1.10 loads scripts outside `sys.modules`, where dataclasses and the like break.
A1111 gets forward pre-hooks on its ldm/sgm UNet, resolved again each pass; Forge, reForge and Forge Neo get
a patched clone of the UNet patcher, as Forge's own scripts do (`backends.patch_forge_patcher`: an attn1 patch
for a UNet, a UNet function wrapper for a DiT family).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends import patch_forge_patcher
from ..patch import TodoHandle, apply
from ..settings import TodoSettings
from ..state import PassState
from .models import a1111_unet, is_forge, native_size

PASS_NAMES = {
    "": "the first pass",
    "hires": "the hires pass",
    "refiner": "the refiner's steps",
    "hires refiner": "the refiner's steps of the hires pass",
}


class TodoJob:
    """One generation job.

    passes: (label, state) per pass ToDo was installed for; label "" is the first pass, "hires" the hires pass.
    `tell` prints a console message (once per job per message).
    """

    def __init__(self, settings: TodoSettings, tell: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.refiner: Any = None  # the job's refiner checkpoint (the webui's checkpoint info), if it has one
        self.passes: list[tuple[str, PassState]] = []
        self._tell = tell
        self._told: set[str] = set()
        self._handle: TodoHandle | None = None  # A1111 hooks of the running pass
        # (model, the UNet patcher it had before ToDo's first pass on it): the first model, and the refiner's
        self._forge_originals: list[tuple[Any, Any]] = []
        self._forge_last: tuple[Any, Any] | None = None  # (our latest clone, the patcher it was cloned from)

    def start_pass(self, sd_model: Any, hires: bool) -> None:
        """Install ToDo for the sampling pass about to run (after releasing the previous one)."""
        self.end_pass()
        settings = self.settings.for_pass(hires)
        if settings is None:
            return
        label = "hires" if hires else ""
        try:
            state = self._install(sd_model, settings)
        except (TypeError, AttributeError) as err:
            self.tell(f"cannot patch this model ({err}); ToDo is off")
            return
        # Forge's hires pass calls the hook twice: a same-label pass that never ran is replaced.
        if self.passes and self.passes[-1][0] == label and not self.passes[-1][1].calls:
            self.passes.pop()
        self.passes.append((label, state))

    def sampling(self) -> bool:
        """Whether a pass is installed and open (between its sampling hook and its end)."""
        return bool(self.passes) and not self.passes[-1][1].closed

    def switch_model(self, sd_model: Any) -> None:
        """A model was loaded while a pass sampled (the refiner: A1111 at its switch step, Forge Neo without
        `refiner_fast_sd`): close that pass and install ToDo on the new model for the steps that remain."""
        label = self.passes[-1][0]
        hires = label.startswith("hires")
        self.end_pass()
        settings = self.settings.for_pass(hires)
        if settings is None:
            return
        try:
            state = self._install(sd_model, settings)
        except (TypeError, AttributeError) as err:
            self.tell(f"cannot patch the refiner's model ({err}); its steps run without ToDo")
            return
        self.passes.append(("hires refiner" if hires else "refiner", state))

    def end_pass(self) -> None:
        """Release the running pass: hooks off, its state closed, and a word if it was asked to act and did not."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if not self.passes or self.passes[-1][1].closed:
            return
        label, state = self.passes[-1]
        state.close()
        reason = state.silence_reason()
        if reason:
            self.tell(f"ToDo was asked to act in {PASS_NAMES[label]} and acted nowhere: {reason}")

    def finish(self) -> None:
        """End the job: release the pass, and give each Forge model ToDo patched (the loaded one, or the first
        model after a refiner switch) the UNet patcher it had before the job."""
        self.end_pass()
        for model, original in self._forge_originals:
            if _drives_same_model(model.forge_objects, original):
                model.forge_objects.unet = original
        self._forge_originals.clear()
        self._forge_last = None

    def set_progress(self, step: int, total: int) -> None:
        """Steer the step window of the running pass: `step` of `total` denoiser calls done."""
        if self.passes:
            self.passes[-1][1].set_progress(step / max(1, total))

    def applied(self) -> str:
        """What ran, e.g. "4x/2x, hires 2x/1x" (a DiT has one level: "2x"); passes where ToDo did not act are
        left out."""
        parts = []
        for label, state in self.passes:
            if state.calls:
                levels = range(1, len(state.plan.layout.level_ds) + 1)
                factors = "/".join(f"{state.applied.get(level, 1.0):g}x" for level in levels)
                parts.append(f"{label} {factors}".strip())
        return ", ".join(parts)

    def clear_passes(self) -> None:
        """Forget the passes of the previous batch (the infotext of a batch tells that batch's passes)."""
        self.end_pass()
        self.passes.clear()

    def tell(self, message: str) -> None:
        """Print a console message the first time it comes up in this job."""
        if message not in self._told:
            self._told.add(message)
            self._tell(message)

    def _install(self, sd_model: Any, settings: TodoSettings) -> PassState:
        native_px = native_size(sd_model)
        if is_forge(sd_model):
            return self._install_forge(sd_model, settings, native_px)
        self._handle = apply(a1111_unet(sd_model), settings, native_px=native_px)
        return self._handle.state

    def _install_forge(self, sd_model: Any, settings: TodoSettings, native_px: int | None) -> PassState:
        objects = sd_model.forge_objects
        # Forge's hires pass may call the hook again before its reset: patch the base, never our own clone.
        base = objects.unet
        if self._forge_last is not None and base is self._forge_last[0]:
            base = self._forge_last[1]
        if not any(model is sd_model for model, _ in self._forge_originals):
            self._forge_originals.append((sd_model, base))
        clone, state = patch_forge_patcher(base, settings, native_px)
        self._forge_last = (clone, base)
        objects.unet = clone
        return state


def _drives_same_model(objects: Any, original: Any) -> bool:
    """Whether the current UNet patcher (ours, or a later clone of ours) still drives the network `original`
    drove; one another script put there for another network is left alone."""
    return getattr(getattr(objects, "unet", None), "model", None) is getattr(original, "model", None)
