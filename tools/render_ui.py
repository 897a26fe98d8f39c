"""Render the ToDo accordion (opened) to a PNG for the README: docs/accordion.png.

    python tools/render_ui.py [--out docs/accordion.png] [--dark] [--width 700] [--img2img]

The real webui is not needed: the script is loaded into the tests' stand-in (tests/webui_stub, the A1111
1.10 `modules` package) exactly as the webui loads it, its always-on UI is built as the webui builds it
(inside a `gr.Group`, the extension's style.css on the page), the accordion is opened, and the page is
served by gradio on 127.0.0.1 only and photographed with headless Chromium (`chromium` on PATH, e.g.
Debian's `apt-get install chromium`, or pass --chromium). The server is closed at the end.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

import gradio as gr  # noqa: E402
from PIL import Image, ImageChops  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STUB = REPO / "tests" / "webui_stub"
for entry in (str(REPO), str(STUB)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

PAGE_CSS = """
footer { display: none !important; }
.gradio-container { min-height: 0 !important; max-width: none !important; }
#render-ui-column { width: %dpx; max-width: %dpx; flex: none; }
.input-accordion-checkbox { margin: 0 0.5em 0 0 !important; border-radius: var(--checkbox-border-radius); }
.input-accordion-checkbox:checked {
    border-color: var(--checkbox-border-color-selected) !important;
    background-color: var(--checkbox-background-color-selected) !important;
    background-image: var(--checkbox-check) !important;
}
"""
# what A1111's javascript/inputAccordion.js does to an InputAccordion, in short: a checkbox (ticked when the
# accordion is open) before the accordion's label, so the label row reads "[x] ToDo: token downsampling"
CHECKBOX_JS = """
() => {
    for (const wrap of document.querySelectorAll('.input-accordion > .label-wrap')) {
        const label = wrap.querySelector('span');
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.checked = true;  // the accordion is shown open, i.e. enabled
        box.className = 'input-accordion-checkbox';
        label.insertBefore(box, label.firstChild);
    }
}
"""
MARGIN = 12  # px of background kept around the content when cropping


def patch_starlette_templates() -> None:
    """gradio 3.41 calls `TemplateResponse(name, {"request": request, ...})`, a form that Starlette 1.x no
    longer takes (it wants the request first); translate it when the installed Starlette needs that."""
    from gradio import routes

    original = routes.templates.TemplateResponse

    def template_response(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str):  # the old form: (name, context, ...)
            name, context, *rest = args
            return original(context["request"], name, context, *rest, **kwargs)
        return original(*args, **kwargs)

    if "request" in inspect.signature(original).parameters:
        routes.templates.TemplateResponse = template_response


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_page(width: int, is_img2img: bool) -> gr.Blocks:
    """A page with the ToDo script's always-on UI, built by the stand-in's ScriptRunner, accordion open."""
    from modules import errors, scripts

    module = scripts.load_script(str(REPO / "scripts" / "todo.py"))
    if module is None or errors.recorded:
        raise SystemExit("loading scripts/todo.py failed:\n" + "\n".join(r.traceback for r in errors.recorded))
    runner = scripts.ScriptRunner()
    runner.initialize_scripts(is_img2img=is_img2img)
    if len(runner.alwayson_scripts) != 1:
        raise SystemExit(f"expected one always-on script, got {runner.alwayson_scripts}")
    script = runner.alwayson_scripts[0]

    # gradio's default font stacks minus its Google font, so the page makes no outside requests
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )
    css = (REPO / "style.css").read_text() + PAGE_CSS % (width, width)
    with gr.Blocks(theme=theme, css=css, analytics_enabled=False, title="ToDo accordion") as page:
        with gr.Column(elem_id="render-ui-column"):
            runner.prepare_ui()
            runner.setup_ui_for_section(None)
        if errors.recorded or not script.controls:
            raise SystemExit("building the UI failed:\n" + "\n".join(r.traceback for r in errors.recorded))
        # in the webui every script input feeds the Generate button, so gradio shows them all interactive (a
        # control that is no event's input and holds a truthy value is drawn disabled); do the same here
        gr.Button("Generate", visible=False).click(fn=None, inputs=runner.inputs[1:], outputs=None)
        # the webui opens the accordion when its checkbox is ticked (javascript/inputAccordion.js); here the
        # accordion is simply created open (read when the Blocks context exits)
        script.controls[0].accordion.open = True
        page.load(fn=None, _js=CHECKBOX_JS)
    return page


def screenshot(chromium: str, url: str, out: Path, window: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="render_ui_chromium_") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={window[0]},{window[1]}",
            "--virtual-time-budget=10000",
            f"--screenshot={out}",
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}")


def crop_to_content(path: Path) -> None:
    """Cut away the page background around the content (the top-left pixel's colour), keeping MARGIN px."""
    image = Image.open(path).convert("RGB")
    background = Image.new("RGB", image.size, image.getpixel((0, 0)))
    box = ImageChops.difference(image, background).getbbox()
    if box is None:
        raise SystemExit(f"{path}: the screenshot is empty")
    left, top, right, bottom = box
    if bottom >= image.height or right >= image.width:
        raise SystemExit(f"{path}: the content reaches the window's edge; pass a larger --height or --width")
    box = (
        max(left - MARGIN, 0),
        max(top - MARGIN, 0),
        min(right + MARGIN, image.width),
        min(bottom + MARGIN, image.height),
    )
    image = image.crop(box).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "accordion.png")
    parser.add_argument("--width", type=int, default=700, help="width of the column holding the accordion (px)")
    parser.add_argument("--height", type=int, default=700, help="browser window height (px)")
    parser.add_argument("--dark", action="store_true", help="gradio's dark theme")
    parser.add_argument("--img2img", action="store_true", help="the img2img tab's UI (no hires controls)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        raise SystemExit("chromium not found: install it (apt-get install chromium) or pass --chromium")

    args.out = args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.unlink(missing_ok=True)
    page = build_page(args.width, args.img2img)
    patch_starlette_templates()
    port = free_port()
    page.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        prevent_thread_lock=True,
        show_api=False,
        quiet=True,
        inbrowser=False,
    )
    try:
        url = f"http://127.0.0.1:{port}/" + ("?__theme=dark" if args.dark else "")
        screenshot(args.chromium, url, args.out, (args.width + 100, args.height))
    finally:
        page.close()
    crop_to_content(args.out)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
