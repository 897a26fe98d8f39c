"""The live state of one sampling pass: where sampling is, the current latent size, and what ToDo did.

Backends call `target()` per attention call and `skip()` when they leave a call alone, so after a pass the state
can say what ran (`applied`) or why nothing did (`silence_reason`). Hosts copy patches freely (Forge's
`ModelPatcher.clone()` deep-copies its model options, and with them our patch): a copy of the state is the state
itself, so every copy steers and reports through the one live object.
"""

from __future__ import annotations

from typing import Any

from .plan import Target, TodoPlan
from .settings import TodoSettings

# Why an attention call was left alone; the words finish "ToDo acted nowhere: ...".
OWN_CONTEXT = "own context"
WRAPPED = "wrapped"
NO_GRID = "no grid"
CLOSED_WINDOW = "window"
EXTRA_TOKENS = "extra tokens"
NOT_ASKED = "not asked"  # a level whose factor is 1 at this size: left alone as planned
OTHER_KERNEL = "other kernel"
REASONS = {
    OWN_CONTEXT: "every self-attention call brought its own context or mask (another extension, e.g. "
    "ControlNet reference-only or StyleAlign, feeds attention itself)",
    WRAPPED: "every self-attention layer was wrapped or tiled by another extension that reshapes its tokens "
    "(HyperTile?)",
    NO_GRID: "no self-attention call matched the latent grid (another extension resized or merged the feature "
    "maps: Deep Shrink, ToMe, tiling?)",
    CLOSED_WINDOW: "the step window (start/stop) held no step of this pass",
    OTHER_KERNEL: "every self-attention call went to another extension's attention kernel instead of the model's "
    "(Radial Attention?)",
    EXTRA_TOKENS: "no attention call of this DiT had its keys laid out as ToDo expects for the model (text, the "
    "image grid, padding and reference images: another extension adding or reordering tokens, or a variant of the "
    "model ToDo does not know?)",
}
NEVER_CALLED = (
    "no attention call of this model reached ToDo (the model's attention layout is not one ToDo knows, or "
    "another extension replaced the model's forward, e.g. TensorRT)"
)


class PassState:
    """Live state of ToDo in one sampling pass, steered by the host and read back after the pass."""

    def __init__(self, plan: TodoPlan) -> None:
        self.plan = plan
        self.latent_hw: tuple[int, int] | None = None
        self.closed = False
        self.applied: dict[int, float] = {}  # factor really used, by level
        self.calls = 0  # attention calls downsampled
        self.skipped: dict[str, int] = {}  # attention calls left alone, by reason
        self.set_progress(0.0)  # until told otherwise, sampling is at its first step

    @property
    def settings(self) -> TodoSettings:
        return self.plan.settings

    def __copy__(self) -> PassState:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> PassState:
        return self

    def set_progress(self, fraction: float) -> None:
        """Tell how far the current sampling pass is (0 at its first step); gates the step window."""
        s = self.settings
        self.active = not self.closed and s.start <= fraction and (fraction < s.stop or s.stop >= 1.0)

    def close(self) -> None:
        """End the pass: whatever still holds a patch or hook of it, nothing is downsampled any more."""
        self.closed = True
        self.active = False

    def target(self, n: int, latent_hw: tuple[int, int] | None) -> Target | None:
        """The target for a self-attention call over `n` tokens, or None (counted as skipped) to leave it alone."""
        if not self.active:
            self.skip(CLOSED_WINDOW)
            return None
        found = None if latent_hw is None else self.plan.target(n, latent_hw)
        if found is None:
            planned = latent_hw is not None and self.plan.on_grid(n, latent_hw)
            self.skip(NOT_ASKED if planned else NO_GRID)
            return None
        self.applied[found.level] = found.factor
        self.calls += 1
        return found

    def skip(self, reason: str) -> None:
        """Count an attention call left alone, and why."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def silence_reason(self) -> str | None:
        """Why ToDo acted nowhere although this pass asked it to act, or None (it acted, or was not asked)."""
        if self.calls or self.settings.is_off_for(len(self.plan.layout.level_ds)):
            return None
        if self.latent_hw is not None and not self.plan.acts_at(self.latent_hw):
            return None  # e.g. auto at native size: nothing was asked
        if not self.skipped:
            return NEVER_CALLED
        counted = {k: v for k, v in self.skipped.items() if k != NOT_ASKED}
        if not counted:
            return None  # every call was on a level planned to stay whole
        if set(counted) == {CLOSED_WINDOW}:
            return REASONS[CLOSED_WINDOW]
        counted.pop(CLOSED_WINDOW, None)
        return REASONS[max(counted, key=counted.__getitem__)]
