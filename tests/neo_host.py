"""Forge Neo's real model code, for opt-in tests: `TODO_NEO_ROOT` names a Neo `webui/` folder (the one holding
`backend/` and `modules_forge/`), and the tests run with a python that has Neo's requirements (its own venv, or
one with torch, einops, comfy-kitchen, psutil, rich, pyyaml, gguf's needs), e.g.

    TODO_NEO_ROOT=~/sd-webui-forge-neo/webui ~/sd-webui-forge-neo/venv/bin/python -m pytest tests/test_neo_real.py

Neo's `backend` reads the command line when imported; the tests hand it `--cpu` and nothing of pytest's.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

NEO_ROOT = os.environ.get("TODO_NEO_ROOT")
requires_neo = pytest.mark.skipif(
    not NEO_ROOT,
    reason="opt-in: set TODO_NEO_ROOT to a Forge Neo webui/ folder (and use a python with its requirements)",
)


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
