"""Forge Neo's real model code, for opt-in tests: `TODO_NEO_ROOT` names a Neo `webui/` folder (the one holding
`backend/` and `modules_forge/`), and the tests run with a python that has Neo's requirements (its own venv, or
one with torch, einops, comfy-kitchen, psutil, rich, pyyaml, gguf's needs), e.g.

    TODO_NEO_ROOT=~/sd-webui-forge-neo/webui ~/sd-webui-forge-neo/venv/bin/python -m pytest tests/test_neo_real_*.py

Neo's `backend` reads the command line when imported; the tests hand it `--cpu` and nothing of pytest's.

What the tests on each family share: `tiny` (a Neo network class in a tiny config, random weights), `neo_call`
(one model call as Neo's KModel makes it: plain, through ToDo's UNet function wrapper, or with ToDo written by hand
in place of the module's `attention_function`), `factor_one_installs_nothing`, and Neo's global reference list
emptied around a test (`ref_latents_emptied`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from dit_family_checks import HandKernel, kernel_replaced, randomise

from lib_todo.backends import dit
from lib_todo.backends.dit_forge import DitCallWrapper
from lib_todo.plan import TodoPlan
from lib_todo.settings import TodoSettings
from lib_todo.state import PassState

NEO_ROOT = os.environ.get("TODO_NEO_ROOT")
requires_neo = pytest.mark.skipif(
    not NEO_ROOT,
    reason="opt-in: set TODO_NEO_ROOT to a Forge Neo webui/ folder (and use a python with its requirements)",
)
TXT = 5  # caption tokens of every call


def neo_module(name: str) -> ModuleType:
    """`backend.nn.<name>` from the Neo tree (imported once per session)."""
    root = Path(NEO_ROOT or "").expanduser().resolve()
    for path in (root / "modules_forge" / "packages", root):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    argv, sys.argv = sys.argv, [str(root / "launch.py"), "--cpu"]
    try:
        return importlib.import_module(f"backend.nn.{name}")
    finally:
        sys.argv = argv


def tiny(cls: Callable[..., torch.nn.Module], std=0.2, seed=0, norms_around_one=False, **config) -> torch.nn.Module:
    """`cls(**config)` with every parameter drawn anew (Neo builds some with torch.empty), in eval mode."""
    torch.manual_seed(0)
    return randomise(cls(**config), std, seed, norms_around_one)


@contextmanager
def ref_latents_emptied() -> Iterator[list]:
    """Neo's global `dynamic_args.ref_latents` (Anima reads it itself; Qwen's Edit engine leaves its references
    there), empty within and emptied after."""
    refs = sys.modules["backend.args"].dynamic_args.ref_latents
    refs.clear()
    try:
        yield refs
    finally:
        refs.clear()


@dataclass
class NeoCall:
    """One model call of a Neo network as Neo's KModel makes it: `network(x, t, context=c_crossattn, **the other
    conds)`, with a fresh `transformer_options={}` (unless the conds hold one) where `options` says so; `args` is
    what a UNet function wrapper is handed ({"input", "timestep", "c"})."""

    network: torch.nn.Module
    args: dict[str, Any]
    options: bool = True

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_crossattn: torch.Tensor, **conds: Any) -> torch.Tensor:
        if self.options:
            conds.setdefault("transformer_options", {})
        return self.network(x, t, context=c_crossattn, **conds)

    def plain(self) -> torch.Tensor:
        with torch.no_grad():
            return self.apply_model(self.args["input"], self.args["timestep"], **self.args["c"])

    def with_todo(self, family, settings: TodoSettings, balance: str = "channel", previous=None):
        """(output, pass state) of the call through ToDo's wrapper, as the webui installs it for `family`."""
        state = PassState(TodoPlan(settings, family.layout()))
        wrapper = DitCallWrapper(state, dit.installation(family, self.network), previous, balance=balance)
        with torch.no_grad():
            return wrapper(self.apply_model, self.args), state

    def by_hand(self, module: ModuleType, hand: HandKernel, split: bool | None = None) -> torch.Tensor:
        """The call without ToDo, `module`'s attention_function doing ToDo by hand (`hand`) where it knows the call."""
        with kernel_replaced(module, "attention_function", hand.forge(module.attention_function, split)):
            return self.plain()


def neo_call(
    network: torch.nn.Module,
    x_shape: tuple[int, ...],
    text_dim: int,
    timestep: tuple[float, float] = (0.4, 0.8),
    options: bool = True,
    drawn: dict[str, tuple[int, ...]] | None = None,
    **conds: Any,
) -> NeoCall:
    """A batch of 2: the latent (2, *x_shape) and the caption (2, TXT, text_dim) drawn from one seed, then `drawn`
    (name: shape per item) from it; `conds` as given; `options`: the network gets `transformer_options={}`."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, *x_shape, generator=g)
    c = {"c_crossattn": torch.randn(2, TXT, text_dim, generator=g)}
    c.update({name: torch.randn(2, *shape, generator=g) for name, shape in (drawn or {}).items()})
    args = {"input": x, "timestep": torch.tensor(timestep), "c": {**c, **conds}}
    return NeoCall(network, args, options)


def factor_one_installs_nothing(call: NeoCall, family) -> None:
    """Factor 1 through ToDo's wrapper: bit-identical to the plain call, no attention call counted."""
    got, state = call.with_todo(family, TodoSettings(factor=1))
    assert torch.equal(got, call.plain()) and state.calls == 0
