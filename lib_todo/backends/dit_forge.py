"""DiTs on Forge, Forge Neo and reForge: ToDo rides on a UNet function wrapper of the per-pass patcher clone.

Forge's sampling function calls the patcher's `model_function_wrapper(apply_model, args)` for every model call
when one is set. Ours reads what the call holds (`DitFamily.read_call` on the latent and the conds), and runs
the call inside `dit.call_scope`, so the family's attention code finds ToDo in place of its kernel for exactly
that call. A wrapper another extension had set (MultiDiffusion, say) still runs, around ours: each call it makes
gets ToDo for its own size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..plan import TodoPlan
from ..settings import TodoSettings
from ..state import CLOSED_WINDOW, NO_GRID, NOT_ASKED, PassState
from .dit import ActiveCall, DitFamily, Installation, call_scope, installation


class DitCallWrapper:
    """Forge's UNet function wrapper `(apply_model, args) -> output`, installing ToDo for one call at a time.

    A copy of the wrapper (Forge's clone deep-copies model options) is the wrapper itself, so it steers one state.
    """

    def __init__(
        self, state: PassState, inst: Installation, previous: Callable[..., Any] | None = None, balance: str = "channel"
    ) -> None:
        self.state = state
        self.inst = inst
        self.previous = previous.previous if isinstance(previous, DitCallWrapper) else previous
        self.balance = balance

    def __copy__(self) -> DitCallWrapper:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> DitCallWrapper:
        return self

    def __call__(self, apply_model: Callable[..., torch.Tensor], args: dict[str, Any]) -> torch.Tensor:
        def apply_with_todo(x: torch.Tensor, t: torch.Tensor, **c: Any) -> torch.Tensor:
            call = self._call_of(x, c)
            if call is None:
                return apply_model(x, t, **c)
            with call_scope(self.inst, ActiveCall(call, self.state, self.balance)):
                return apply_model(x, t, **c)

        if self.previous is not None:  # e.g. MultiDiffusion: each tile reaches ToDo as a call of its own size
            return self.previous(apply_with_todo, args)
        return apply_with_todo(args["input"], args["timestep"], **args["c"])

    def _call_of(self, x: Any, c: dict[str, Any]) -> Any:
        """What this model call holds, or None (counted in the state) when ToDo sits it out."""
        state = self.state
        call = self.inst.family.read_call(self.inst.network, x, c) if isinstance(x, torch.Tensor) else None
        if call is None:
            state.skip(NO_GRID)
            return None
        state.latent_hw = call.grid.hw
        if not state.active:
            state.skip(CLOSED_WINDOW)
            return None
        if not state.plan.acts_at(state.latent_hw):
            state.skip(NOT_ASKED)
            return None
        return call


def patch_dit_patcher(
    patcher: Any, family: DitFamily, settings: TodoSettings, native_px: int | None = None, balance: str = "channel"
) -> tuple[Any, PassState]:
    """A clone of Forge's / Neo's / reForge's UNet patcher of a `family` network with ToDo's wrapper, and its state.

    The caller assigns the clone back (`p.sd_model.forge_objects.unet = clone`); the original is untouched.
    With factor 1 (a DiT's only level) the clone carries nothing of ToDo. TypeError when the network's attention
    cannot be found.
    """
    inst = installation(family, patcher.model.diffusion_model)
    layout = family.layout(native_px)
    state = PassState(TodoPlan(settings, layout))
    clone = patcher.clone()
    if not settings.is_off_for(len(layout.level_ds)):
        previous = clone.model_options.get("model_function_wrapper")
        clone.set_model_unet_function_wrapper(DitCallWrapper(state, inst, previous, balance))
    return clone, state
