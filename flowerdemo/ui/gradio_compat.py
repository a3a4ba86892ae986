"""Every place the app leans on Gradio internals or works around Gradio behaviour, in one module, so a Gradio
upgrade touches one file. Each entry says which Gradio version it was written against and why it exists."""
from __future__ import annotations


def update_props(update: dict) -> dict:
    """The properties of a ``gr.update(...)`` without its ``__type__`` marker (Gradio 6.31 represents updates as
    dicts), so one event can return ``gr.update(value=..., **update_props(style))`` for a component."""
    return {key: value for key, value in update.items() if key != "__type__"}


def parse_file_size(text: str) -> int:
    """Gradio's own parser for sizes like ``20mb`` (``gradio.utils._parse_file_size``, private in 6.31), so the
    app accepts exactly what ``launch(max_file_size=...)`` accepts."""
    from gradio.utils import _parse_file_size

    return _parse_file_size(text)
