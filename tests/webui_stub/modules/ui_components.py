"""modules/ui_components.py (A1111 1.10, gradio 3.41.2): `InputAccordion` and the form helpers.

`InputAccordion` is a hidden `gr.Checkbox` (so it is one bool input of the script and `isinstance(x,
gr.Checkbox)` holds) that creates a `gr.Accordion` opened iff the value is true; `with` enters the
accordion, `.extra()` gives a column for the accordion's label row. The browser side
(javascript/inputAccordion.js) keeps the two in sync; here only the Python objects exist.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class FormComponent:
    def get_expected_parent(self) -> Any:
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self) -> str:
        return "button"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self) -> str:
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self) -> str:
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self) -> str:
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self) -> str:
        return "html"


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value: bool, **kwargs: Any) -> None:
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1

        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        # the real one registers a JS-only change handler that updates the accordion in the browser
        self.change(
            fn=None, _js=f'function(checked){{ inputAccordionChecked("{self.accordion_id}", checked); }}', inputs=[self]
        )
        self.accordion = gr.Accordion(
            **{
                **kwargs,
                "elem_id": self.accordion_id,
                "label": kwargs.get("label", "Accordion"),
                "elem_classes": ["input-accordion"],
                "open": value,
            }
        )

    def extra(self) -> gr.Column:
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self) -> InputAccordion:
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self) -> str:
        return "checkbox"
