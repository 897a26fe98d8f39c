"""Named studies: `python -m lib_todo.bench --study NAME[,NAME]`, one JSON of rows in the bench's one schema.

A study is a question the configurations of a family do not ask: how much balance changes the output, what the
balance bias costs as a kernel input. Output-change studies fill `rel_change` (their timing columns stay empty);
a timed study runs its variants through the bench's timing loop (`measure.measure_cell`) and gets the same
estimator, A/A noise floor, table and JSON as any family. Each study is a module here with
`run(opts, log) -> rows`; `STUDIES` names them (loaded only when asked for).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..family import Size, image_size

Log = Callable[[str], None]


@dataclass(frozen=True)
class Study:
    """One `--study` name: its module (with `run(name, opts, log) -> rows`), a summary for --help, its default
    `--sizes` and `--factors`, the packages it needs and how its sizes are written."""

    name: str
    module: str
    summary: str
    sizes: str = "1024"
    factors: str = "2,3,4"
    needs: tuple[tuple[str, str], ...] = (("diffusers", "pip install diffusers"),)
    parse_size: Callable[[str], Size] = field(default=partial(image_size, multiple=16))  # Flux's patch: 16 px

    def run(self, opts: Any, log: Log) -> list[dict[str, Any]]:
        """The study's rows for the checked options `opts` (sizes, factors, repeats, warmup, budget_s, clock)."""
        return importlib.import_module(f"{__name__}.{self.module}").run(self.name, opts, log)


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study("balance", "balance", "Flux: output change with and without balance, small random-weight transformer"),
        Study("attention", "balance", "Flux: output change with and without balance, joint attention alone"),
        Study("bias", "bias", "Flux: CPU cost of three ways to add the balance bias, against plain SDPA", factors="2"),
    )
}
