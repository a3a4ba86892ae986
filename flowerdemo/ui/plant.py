"""Several photos of one plant: the ``/classify_plant`` callback and what the page says about a plant's answer.

``/classify_plant`` takes a list of files (``gr.File(file_count="multiple")``) and the heatmap opacity, and
returns what ``/classify`` returns (label, verdict, heatmaps, references, state): one answer for the plant
(``FlowerClassifier.explain_plant``; the rule is ``flowerdemo.core.combine``), a heatmap of the plant's top
class in each photo it combined, the photo that carried the answer marked. Photos left out (unreadable,
repeated, not a flower) are named in the verdict; only a set with no usable photo at all is a ``gr.Error``.
"""
from __future__ import annotations

import os
from typing import Any

import gradio as gr

from ..core.combine import MAX_PHOTOS, EmptyPlantError
from ..core.names import display_name
from ..core.verdict import Verdict
from .events import (ResultState, checked_opacity, image_source, page_errors, photo_to_keep, references_html,
                     render_overlays)
from .presenters import (DEFAULT_OPACITY, NO_IMAGE_TITLE, TOP_K, label_value, percent,
                         verdict_markdown)
from .runtime import LazyModel, get_model

NO_PHOTOS_MESSAGE = f"Add one to {MAX_PHOTOS} photos of the same plant: a bloom, another bloom, the whole plant."
CARRIED = "carried the answer"


def plant_sources(value: Any) -> tuple[list, list[str]]:
    """(what to open, the name to report) for each file of a ``gr.File(file_count="multiple")`` payload
    (``preprocess=False``: a list of FileData dicts), a list of paths, or one file. An entry with nothing to
    open is kept as an empty file, so it is named as unreadable rather than failing the whole set."""
    if value is None or value == "" or value == []:
        raise gr.Error(NO_PHOTOS_MESSAGE, title=NO_IMAGE_TITLE, print_exception=False)
    items = value if isinstance(value, (list, tuple)) else [value]
    if len(items) > MAX_PHOTOS:
        raise gr.Error(f"At most {MAX_PHOTOS} photos of one plant, got {len(items)}: keep the sharpest.",
                       title="Too many photos", print_exception=False)
    sources, names = [], []
    for index, item in enumerate(items):
        name = _file_name(item) or f"photo {index + 1}"
        try:
            sources.append(image_source(item))
        except gr.Error:
            sources.append(b"")
        names.append(name)
    return sources, names


def _file_name(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("orig_name") or os.path.basename(str(item.get("path") or "")))
    if isinstance(item, (str, os.PathLike)):
        return os.path.basename(os.fspath(item))
    return ""


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()<>#+-.!|~"})


def markdown_text(text: str) -> str:
    """A file name (chosen by whoever uploads it) as literal text in Markdown: no emphasis, links or HTML."""
    return str(text).translate(_MARKDOWN)


def plant_caption(name: str, class_name: str, probability: float, carried: bool) -> str:
    """"b.jpg: rose 92.0% ★ carried the answer": the photo, and how sure it alone is of the plant's answer."""
    return f"{name}: {display_name(class_name)} {percent(probability)}" + (f" ★ {CARRIED}" if carried else "")


def plant_verdict_markdown(plant, set_level: float | None = None) -> str:
    """The verdict as for one photo, said of the plant: how many photos it rests on, which one carried it,
    and which were left out and why."""
    text = verdict_markdown(plant.prediction, set_level)
    heading, _, body = text.partition("\n")
    count = len(plant.used)
    if plant.prediction.verdict is Verdict.NOT_A_FLOWER:
        line = (f"**For the plant: none of its {count} photos shows a flower.**" if count > 1
                else "**For the plant: its one usable photo shows no flower.**")
    elif count == 1:
        line = f"**For the plant, from one photo:** {markdown_text(plant.carrier)}."
    else:
        line = f"**For the plant, from {count} photos together;** {markdown_text(plant.carrier)} {CARRIED}."
    left_out = ""
    if plant.left_out:
        left_out = "\n\nLeft out: " + "; ".join(f"{markdown_text(item.name)} ({markdown_text(item.reason)})"
                                             for item in plant.left_out) + "."
    return f"{heading}\n{line}\n\n{body}{left_out}"


def make_classify_plant(model: LazyModel, top_k: int = TOP_K):
    """The ``/classify_plant`` callback: (files, opacity) -> (label, verdict, heatmaps, references, state)."""

    def classify_plant(files, opacity: float = DEFAULT_OPACITY):
        """Name a plant from one to five photos of it: one answer (top classes, verdict), a heatmap of the
        answer in each photo, the photo that carried it, and the photos left out (unreadable, repeated, not a
        flower) named in the verdict."""
        sources, names = plant_sources(files)
        opacity = checked_opacity(opacity)
        classifier = get_model(model)
        with page_errors(EmptyPlantError):
            explanation = classifier.explain_plant(sources, names=names, top_k=top_k)
        plant = explanation.plant
        prediction = plant.prediction
        sets = getattr(getattr(classifier, "metadata", None), "prediction_sets", None)
        top = prediction.top_k[0][0]
        references = references_html([name for name, _ in prediction.top_k])
        state = ResultState(
            view=explanation.views[0], heatmaps=explanation.heatmaps,
            captions=tuple(plant_caption(plant.names[i], top, p, i == plant.carried_by)
                           for i, p in zip(plant.used, explanation.top_probabilities)),
            verdict=prediction.verdict, classes=len(prediction.top_k), references=bool(references),
            photo=photo_to_keep(explanation.photo), top1=top, prediction_set=tuple(prediction.prediction_set),
            views=tuple(explanation.views))
        return (label_value(prediction), plant_verdict_markdown(plant, sets.level if sets else None),
                render_overlays(state, opacity), references, state)

    return classify_plant
