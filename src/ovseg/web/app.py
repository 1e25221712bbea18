"""The Gradio page over a ``WebSession``: upload or pick a photo, type classes, see the segmentation.

    app = build_app(WebSession(Segmenter.from_checkpoint("ovsegmentor.pth")))
    launch(app, host="127.0.0.1", port=7860, limits=WebLimits())

Needs the ``web`` extra (``pip install 'ovseg[web]'``). Nothing leaves the machine: Gradio's telemetry is
off, fonts and scripts are served by the page's own server, and it binds to the loopback address unless
told otherwise.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import OvsegError
from .session import LegendRow, WebLimits, WebResult, WebSession, page_message

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
# bundled photos (scikit-image's data, public domain / CC0) with classes that fit them
EXAMPLES = (
    ("astronaut.jpg", "person|astronaut|woman, flag, rocket|space shuttle, wall"),
    ("coffee.jpg", "cup|mug, coffee, spoon, plate|saucer, table"),
    ("chelsea.jpg", "cat, wall, floor"),
)
TEMPLATE_CHOICES = [("simple (1 prompt)", "simple"), ("subset (7 prompts)", "subset"), ("full (80 prompts)", "full")]
OUTPUT_BUTTONS = ["download", "fullscreen"]  # no "share": nothing leaves the machine
QUEUE_SIZE = 16  # requests waiting beyond this are refused with a "queue is full" message
CSS = """
#ovseg-legend table { border-collapse: collapse; width: 100%; }
#ovseg-legend td { padding: 2px 6px; }
.ovseg-swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #0006; vertical-align: middle; }
.ovseg-bar { height: 0.8em; min-width: 1px; border-radius: 2px; }
.ovseg-absent { opacity: 0.5; }
.ovseg-error { color: #b91c1c; font-weight: 600; }
"""


def build_app(session: WebSession, title: str = "") -> gr.Blocks:
    """The page's layout and events; ``title``: what is served (e.g. the checkpoint's file name)."""
    with gr.Blocks(title="ovseg · open-vocabulary segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"## ovseg · open-vocabulary segmentation\n{_header(session, title)}")
        with gr.Row():
            with gr.Column(scale=1):
                image, classes, templates, use_bg, bg, button = _input_column(session)
                gr.Examples([[str(EXAMPLES_DIR / name), names] for name, names in EXAMPLES],
                            inputs=[image, classes], label="Example photos (click one, then Segment)")
            with gr.Column(scale=1):
                outputs = _output_column()
        run = _handler(session)
        for trigger in (button.click, classes.submit):
            trigger(run, inputs=[image, classes, templates, use_bg, bg], outputs=outputs, preprocess=False,
                    api_visibility="private", concurrency_id="segment")
        use_bg.change(lambda on: gr.Slider(interactive=on), use_bg, bg, queue=False, api_visibility="private")
    return app


def _header(session: WebSession, title: str) -> str:
    device = session.segmenter.device
    what = f"`{html.escape(title)}` on {device.type}" if title else f"on {device.type}"
    return (f"Segmenting with {what}. Classes are comma-separated; join synonyms with `|` "
            "(`person|man|woman`) or type a preset (`voc`, `context`, `coco`, `ade`). "
            "Everything runs on this machine.")


def _input_column(session: WebSession) -> list[gr.components.Component]:
    """[image, classes, templates, background on/off, threshold, segment button]."""
    image = gr.Image(label="Photo (upload, drop or paste)", type="filepath", sources=["upload", "clipboard"],
                     height=360, elem_id="ovseg-image")
    classes = gr.Textbox(label="Classes", placeholder="cat, dog, person|man|woman", lines=1, max_lines=4,
                         elem_id="ovseg-classes")
    with gr.Accordion("Settings", open=True):
        default = session.default_templates
        templates = gr.Radio(TEMPLATE_CHOICES, label="Prompt templates",
                             value=default if default in dict(TEMPLATE_CHOICES).values() else "simple")
        thresh = session.default_bg_thresh
        use_bg = gr.Checkbox(value=thresh is not None, label="Background class (for groups whose best class "
                             "probability is below the threshold)")
        bg = gr.Slider(0.0, 1.0, value=0.95 if thresh is None else thresh, step=0.01,
                       interactive=thresh is not None, label="Background threshold")
    button = gr.Button("Segment", variant="primary", elem_id="ovseg-run")
    return [image, classes, templates, use_bg, bg, button]


def _output_column() -> list[gr.components.Component]:
    """[status, overlay, legend, group map, mask file]."""
    status = gr.HTML(elem_id="ovseg-status")
    overlay = gr.Image(label="Segmentation", format="png", interactive=False, buttons=OUTPUT_BUTTONS,
                       elem_id="ovseg-overlay")
    legend = gr.HTML(elem_id="ovseg-legend")
    with gr.Row():
        groups = gr.Image(label="Group map (final grouping block)", format="jpeg", interactive=False,
                          buttons=OUTPUT_BUTTONS, elem_id="ovseg-groups")
        mask = gr.File(label="Label mask PNG (0 = background, k = k-th class; paletted, names inside)",
                       interactive=False, elem_id="ovseg-mask")
    return [status, overlay, legend, groups, mask]


def _handler(session: WebSession):
    """The event function: raw payloads in (``preprocess=False``, so that a bad file reaches our own
    reader and its message), (status, overlay, legend, group map, mask path) out."""

    def segment(image: dict[str, Any] | None, classes: str, templates: str, use_bg: bool, bg: float):
        try:
            path, name = _upload_path(image)
            result = session.segment(path, classes, templates, float(bg) if use_bg else None, name)
        except Exception as e:  # the page's boundary: log a bug, tell the user (no server paths), keep serving
            if not isinstance(e, OvsegError):
                log.exception("segmentation failed")
            return _error(page_message(e))
        return (_status(result), result.overlay, legend_html(result.legend), result.groups,
                str(result.mask_path))

    return segment


def _upload_path(image: dict[str, Any] | None) -> tuple[str, str | None]:
    """(local path, original file name) of the image payload."""
    if not image:
        raise OvsegError("upload a photo first (or pick one of the examples below)")
    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
    if not path:
        raise OvsegError("the photo did not arrive as a file; upload it again")
    name = image.get("orig_name") if isinstance(image, dict) else getattr(image, "orig_name", None)
    return path, name if isinstance(name, str) else None


def _error(message: str) -> tuple:
    return (f'<div class="ovseg-error" role="alert">⚠ {html.escape(message)}</div>', None, "", None, None)


def _status(result: WebResult) -> str:
    found = sum(r.share > 0 for r in result.legend)
    cache = "image encoding reused" if result.reused else "image encoded"
    return (f'<div class="ovseg-ok">{found} of {len(result.legend)} classes found in {result.seconds:.2f} s '
            f"({cache})</div>")


def legend_html(rows: list[LegendRow]) -> str:
    """A table of every class asked for: colour, name, mask index, pixel share (absent ones greyed)."""
    lines = ["<table>"]
    for r in rows:
        colour = "#{:02x}{:02x}{:02x}".format(*r.colour)
        absent = ' class="ovseg-absent"' if r.share == 0 else ""
        lines.append(
            f'<tr{absent} data-class="{html.escape(r.name)}"><td><span class="ovseg-swatch" '
            f'style="background:{colour}"></span></td><td>{html.escape(r.name)}</td><td>#{r.index}</td>'
            f'<td style="width:40%"><div class="ovseg-bar" style="width:{100 * r.share:.1f}%;background:{colour}">'
            f'</div></td>'
            f'<td style="text-align:right">{100 * r.share:.1f}%</td></tr>')
    return "\n".join(lines + ["</table>"])


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, limits: WebLimits | None = None) -> None:
    """Start serving ``app`` at http://host:port and return (``app.block_thread()`` waits for Ctrl+C, ``app.close()``
    stops): a queue (one segmentation at a time, ``QUEUE_SIZE`` waiting) and the upload limit. Raises
    ``OvsegError`` when it cannot listen there."""
    limits = limits or WebLimits()
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    try:
        app.launch(server_name=host, server_port=port, max_file_size=limits.max_upload_bytes, share=False,
                   inbrowser=False, quiet=True, show_error=False, ssr_mode=False, pwa=False, mcp_server=False,
                   run_history=False, footer_links=["gradio", "settings"], prevent_thread_lock=True, css=CSS)
    except OSError as e:
        raise OvsegError(f"cannot listen on {host}:{port}: the port is in use or the address is not this "
                         "machine's; choose another --port or --host") from e
