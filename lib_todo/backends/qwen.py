"""The qwen family (work in progress: its DitFamily descriptors go here)."""

from __future__ import annotations

from .dit import DitFamily

FAMILIES: tuple[DitFamily, ...] = ()
