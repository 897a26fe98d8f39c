"""Stand-in for modules/ui_components.py (A1111 1.10 on gradio 3.41): `InputAccordion` only.

An `InputAccordion` is a hidden `gr.Checkbox` (so it is one bool input of its script, and an
`isinstance(x, gr.Checkbox)` check holds) that owns a `gr.Accordion`, open iff the value is true. `with`
enters the accordion. (The real `.extra()` label-row column is not modelled: the extension does not use
it.) In the webui, javascript/inputAccordion.js keeps checkbox and accordion in sync in the browser; here
only the Python objects exist.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import gradio as gr

_unnamed = count()


class InputAccordion(gr.Checkbox):
    def __init__(self, value: bool, **kwargs: Any) -> None:
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{next(_unnamed)}"
        checkbox_kwargs = {**kwargs, "elem_id": self.accordion_id + "-checkbox", "visible": False}
        super().__init__(value, **checkbox_kwargs)
        accordion_kwargs = {**kwargs, "elem_id": self.accordion_id, "elem_classes": ["input-accordion"]}
        accordion_kwargs.setdefault("label", "Accordion")
        self.accordion = gr.Accordion(open=value, **accordion_kwargs)

    def __enter__(self) -> InputAccordion:
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.accordion.__exit__(*exc)

    def get_block_name(self) -> str:
        return "checkbox"  # the browser draws it as the checkbox it is
