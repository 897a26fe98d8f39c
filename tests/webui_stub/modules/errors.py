"""modules/errors.py: `report` prints and records an error instead of raising it.

Every script hook and callback of the webui runs inside `try/except Exception: errors.report(...)`, so a
crashing extension never aborts generation. Tests read `recorded` to see what was swallowed.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass


@dataclass
class Recorded:
    message: str
    exception: BaseException | None
    traceback: str


recorded: list[Recorded] = []


def report(message: str, *, exc_info: bool = False) -> None:
    _, exc, _ = sys.exc_info()
    text = traceback.format_exc() if exc is not None else ""
    recorded.append(Recorded(message, exc, text))
    for line in message.splitlines():
        print("***", line, file=sys.stderr)
    if exc_info and text:
        print(text, file=sys.stderr)
