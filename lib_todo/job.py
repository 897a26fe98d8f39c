"""What ToDo installed for one webui job, pass by pass (kept out of the script: see scripts/todo.py)."""

from __future__ import annotations

from typing import Any

from .patch import TodoHandle
from .plan import TodoState
from .settings import TodoSettings


class TodoJob:
    """One generation job: its settings, the live state of each sampling pass, and what to undo.

    passes: (label, state) per pass ToDo was installed for; label "" is the first pass, "hires" the
    hires-fix pass. handle: A1111 hooks of the current pass. forge_*: Forge patchers (the one found
    before the first pass, the one cloned last and its base).
    """

    def __init__(self, settings: TodoSettings) -> None:
        self.settings = settings
        self.passes: list[tuple[str, TodoState]] = []
        self.handle: TodoHandle | None = None
        self.forge_original: Any = None
        self.forge_base: Any = None
        self.forge_clone: Any = None
        self._told: set[str] = set()

    def start_pass(self, label: str, state: TodoState) -> None:
        """Record a pass; a same-label pass that never ran is replaced (Forge calls the hook twice for hires)."""
        if self.passes and self.passes[-1][0] == label and not self.passes[-1][1].applied:
            self.passes.pop()
        self.passes.append((label, state))

    def set_progress(self, step: int, total: int) -> None:
        """Steer the step window of the running pass: `step` of `total` denoiser calls done."""
        if self.passes:
            self.passes[-1][1].set_progress(step / max(1, total))

    def applied(self) -> str:
        """What ran, e.g. "4x/2x, hires 2x/1x"; passes where ToDo did not act are left out."""
        parts = []
        for label, state in self.passes:
            if state.applied:
                factors = "/".join(f"{state.applied.get(level, 1.0):g}x" for level in (1, 2))
                parts.append(f"{label} {factors}".strip())
        return ", ".join(parts)

    def tell_once(self, message: str) -> bool:
        """True the first time a message comes up in this job (so the console gets it once)."""
        if message in self._told:
            return False
        self._told.add(message)
        return True
