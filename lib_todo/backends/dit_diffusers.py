"""DiTs in diffusers: a pre-hook on the transformer reads each forward's call and enters `dit.call_scope` for it.

The pre-hook (with the forward's arguments) asks the family what the call holds (`DitFamily.read_call`), and
installs the scope hooks and the kernel replacement for that forward only; a forward hook that runs also when
the forward raises takes them away. Between forwards nothing of ToDo but these two hooks is in the model.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from torch import nn

from ..state import NO_GRID, PassState
from .dit import ActiveCall, DitCall, DitFamily, call_scope, installation

TAG = "_lib_todo_dit"


def install(
    network: nn.Module,
    family: DitFamily,
    state: PassState,
    balance: str = "channel",
    active: Callable[[DitCall, PassState, str], ActiveCall] = ActiveCall,
) -> list[Any]:
    """Hook `network` so each forward runs with ToDo (or with what `active` makes of each call: the bench's
    `dit.BoundCall`); returns removable handles. TypeError when its attention cannot be found."""
    inst = installation(family, network)
    stack = ExitStack()

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        stack.close()  # a forward that never reached its end hook (interrupted) leaves nothing behind
        call = family.read_call(module, args, kwargs)
        if call is None:
            state.skip(NO_GRID)
            return
        state.latent_hw = call.grid.hw
        stack.enter_context(call_scope(inst, active(call, state, balance)))

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        stack.close()

    return [
        network.register_forward_pre_hook(_tagged(enter), with_kwargs=True),
        network.register_forward_hook(_tagged(leave), always_call=True),
    ]


def remove_installed(network: nn.Module) -> int:
    """Remove this backend's hooks from `network`, even without their handles; returns how many went."""
    removed = 0
    for hooks in (network._forward_pre_hooks, network._forward_hooks):
        for key, fn in list(hooks.items()):
            if getattr(fn, TAG, False):
                del hooks[key]
                network._forward_pre_hooks_with_kwargs.pop(key, None)
                network._forward_hooks_always_called.pop(key, None)
                removed += 1
    return removed


def has_todo(network: nn.Module) -> bool:
    """Whether this backend's hooks are on `network`."""
    hooks = [*network._forward_pre_hooks.values(), *network._forward_hooks.values()]
    return any(getattr(fn, TAG, False) for fn in hooks)


def _tagged(fn: Callable) -> Callable:
    setattr(fn, TAG, True)
    return fn
