"""Every place the app leans on Gradio internals or works around Gradio behaviour, in one module, so a Gradio
upgrade touches one file. Each entry says which Gradio version it was written against and why it exists."""
from __future__ import annotations

import gradio as gr


def update_props(update: dict) -> dict:
    """The properties of a ``gr.update(...)`` without its ``__type__`` marker (Gradio 6.31 represents updates as
    dicts), so one event can return ``gr.update(value=..., **update_props(style))`` for a component."""
    return {key: value for key, value in update.items() if key != "__type__"}


def parse_file_size(text: str) -> int:
    """Gradio's own parser for sizes like ``20mb`` (``gradio.utils._parse_file_size``, private in 6.31), so the
    app accepts exactly what ``launch(max_file_size=...)`` accepts."""
    from gradio.utils import _parse_file_size

    return _parse_file_size(text)


def back_camera() -> gr.WebcamOptions:
    """Webcam options that open the back camera (a plant is photographed with it, not the selfie camera).

    Gradio 6.31's image component hands ``constraints`` to ``navigator.mediaDevices.getUserMedia`` as they are
    (its webcam code: ``video: deviceId ? {deviceId, ...constraints.video} : constraints.video || {1920x1440}``),
    so ``facingMode`` reaches the browser; "ideal" lets a laptop with one camera still open it. Not mirrored:
    mirroring is for selfies, and Gradio 6.31 also mirrors the captured picture."""
    return gr.WebcamOptions(mirror=False, constraints={"video": {"facingMode": {"ideal": "environment"},
                                                                 "width": {"ideal": 1920},
                                                                 "height": {"ideal": 1440}}})


def tag_examples(examples, elem_id: str) -> None:
    """Give the examples' table an element id (``gr.Examples`` takes none in Gradio 6.31): its ``dataset``
    component is rendered already, and its config, id included, is read at launch, so setting it here works."""
    if examples is not None and getattr(examples, "dataset", None) is not None:
        examples.dataset.elem_id = elem_id


# The phone layout (written against Gradio 6.31's DOM). At 390 x 844 the answer must be on screen right after an
# upload, without scrolling past the photo: the page's side padding (PHONE_HEAD) and heading shrink, the photo preview is 200 px
# high instead of 300 (Gradio writes the height inline, hence !important), and the two columns of the first row
# dissolve (display: contents) so their parts can be reordered: photo, Identify, verdict, top classes, "Is this
# right?", then several photos of one plant and the examples. The heatmaps and references rows follow as before.
# Wider screens keep the side-by-side layout untouched.
PHONE_WIDTH = 640
PHONE_CSS = f"""
@media (max-width: {PHONE_WIDTH}px) {{
  #fd-intro h2 {{ font-size: var(--text-xl); margin-bottom: var(--size-1); }}
  #fd-intro p {{ font-size: var(--text-sm); margin: 0; }}
  #fd-image {{ height: 200px !important; }}
  #fd-main {{ flex-direction: column; flex-wrap: nowrap; }}
  #fd-photo-column, #fd-answer-column {{ display: contents; }}
  #fd-image {{ order: 1; }}
  #fd-identify {{ order: 2; }}
  #fd-verdict {{ order: 3; }}
  #fd-label {{ order: 4; }}
  #fd-feedback {{ order: 5; }}
  #fd-plant {{ order: 6; }}
  #fd-examples {{ order: 7; }}
  .fd-verdict h3 {{ font-size: var(--text-xl); }}
}}
"""

# Gradio 6.31 scopes the app's css under ``.gradio-container... .contain``, so the page's own side padding (on
# ``.main.app``, an ancestor of ``.contain``) can only be reached from ``launch(head=...)``, which it leaves as is.
PHONE_HEAD = (f"<style>@media (max-width: {PHONE_WIDTH}px) {{ .gradio-container .main.app "
              "{ padding-left: var(--size-3) !important; padding-right: var(--size-3) !important; } }</style>")
