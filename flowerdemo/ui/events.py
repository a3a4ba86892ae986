"""Event adapters: the callbacks the Blocks wire to components (plain functions, unit-tested directly)."""
from __future__ import annotations

import base64
import binascii
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from ..core.preprocess import InvalidImageError, load_image
from ..core.verdict import Verdict
from .assets import reference_items, static_url
from .gradio_compat import update_props
from .presenters import (CAM_CLASSES, DEFAULT_OPACITY, NO_IMAGE_MESSAGE, NO_IMAGE_TITLE, READY_MESSAGE, TOP_K,
                         UNREADABLE_TITLE, cam_caption, contrast_caption, error_markdown, figures_html, intro_markdown,
                         jpeg_data_url, label_value, model_markdown, verdict_markdown)
from .runtime import LazyModel, get_model


@dataclass(frozen=True)
class ResultState:
    """What the page keeps of its last answer (per browser session, in ``gr.State``): enough to re-render the
    heatmaps at another opacity and to style the label, without running the model again, and to save the photo
    with the model's answer when the person says whether it was right (the upload itself may be gone by then)."""

    view: Any  # PIL image: the centre crop the model saw
    heatmaps: Any  # [K, h, w] in [0, 1]
    captions: tuple
    verdict: Verdict | None
    classes: int
    references: bool
    photo: Any = None  # PIL image: the photo as classified (upright RGB), what a saved answer keeps
    top1: str | None = None
    prediction_set: tuple = ()
    views: tuple = ()  # several photos of one plant: heatmap i is drawn over views[i] (else all over ``view``)


def image_source(value: Any):
    """What ``load_image`` should open, from a Gradio image payload (``preprocess=False``), a path or a PIL image.

    Raises ``gr.Error`` when there is no image.
    """
    if value is None or value == "":
        raise gr.Error(NO_IMAGE_MESSAGE, title=NO_IMAGE_TITLE, print_exception=False)
    if isinstance(value, dict):
        if value.get("path"):
            return value["path"]
        url = value.get("url") or ""
        if url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (binascii.Error, ValueError):
                raise gr.Error("The pasted image data is not valid base64.", print_exception=False) from None
        raise gr.Error(NO_IMAGE_MESSAGE, title=NO_IMAGE_TITLE, print_exception=False)
    return value


KEPT_SHORT_SIDE = 1024  # a saved photo's short side is at most this (the feedback store's own bound)


def photo_to_keep(photo):
    """The photo an answer keeps for a possible save, without slowing the answer: a JPEG is already decoded at
    about this size (``load_image``'s draft mode), and a huge photo (a 40 MP PNG) is cut by a whole factor
    (``Image.reduce``: a few tens of ms against the hundreds its decoding took) instead of being kept in full in
    every session's state. The store resizes it exactly."""
    factor = min(photo.size) // KEPT_SHORT_SIDE
    return photo.reduce(factor) if factor >= 2 else photo


def maps_to_show(explanation) -> Any:
    """The per-class heatmaps, then the "why A and not B" map when there is one: [K or K + 1, h, w]."""
    if getattr(explanation, "contrast", None) is None:
        return explanation.heatmaps
    return np.concatenate([explanation.heatmaps, explanation.contrast[None]])


def render_overlays(state: ResultState | None, opacity: float) -> str:
    """The stored Grad-CAM maps over the photo at this opacity, with their captions, as inline HTML."""
    # heavy (torch): imported with the first answer, so importing the app serves the page before torch loads
    from ..serve.gradcam import overlay
    if not state:
        return ""
    opacity = min(1.0, max(0.0, float(opacity)))
    views = state.views or (state.view,) * len(state.heatmaps)
    return figures_html([(jpeg_data_url(overlay(view, heatmap, opacity)), caption)
                         for view, heatmap, caption in zip(views, state.heatmaps, state.captions)], "Grad-CAM",
                        inline=True)


def references_html(names) -> str:
    """The bundled training-set photo of each candidate, served from its static path (no per-answer copy)."""
    return figures_html([(static_url(path), caption) for path, caption in reference_items(names)],
                        "Reference photo")


def checked_opacity(opacity) -> float:
    """The heatmap opacity an API client sent (None: the default); a gr.Error unless a number in [0, 1]."""
    try:
        opacity = DEFAULT_OPACITY if opacity is None else float(opacity)
    except (TypeError, ValueError):
        raise gr.Error(f"opacity must be a number in [0, 1], got {opacity!r}", print_exception=False) from None
    if not 0.0 <= opacity <= 1.0:
        raise gr.Error(f"opacity must be in [0, 1], got {opacity}", print_exception=False)
    return opacity


@contextmanager
def page_errors(*unreadable: type):
    """What the person gave cannot be answered: a photo that cannot be read (``unreadable``) becomes a message
    under its own title, any other bad value a plain one; both as ``gr.Error``, never a traceback. /classify and
    /classify_plant translate the same way."""
    try:
        yield
    except unreadable as error:
        raise gr.Error(str(error), title=UNREADABLE_TITLE, print_exception=False) from None
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None


def make_classify(model: LazyModel, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES):
    """The ``/classify`` callback: (image, opacity) -> (label, verdict, Grad-CAM gallery, references, state).

    It returns plain values (no component updates), so API clients get the top-k label as their first output,
    and bad input is a ``gr.Error``. The page wraps it in :func:`make_auto_classify`, which styles the label
    and turns errors into a message in the verdict area.
    """

    def classify(image, opacity: float = DEFAULT_OPACITY):
        """Name the flower in a photo: the top classes with calibrated probabilities, a verdict, Grad-CAM
        overlays for the top 3 classes, and a training-set reference photo of each top class."""
        source = image_source(image)
        opacity = checked_opacity(opacity)
        classifier = get_model(model)
        with page_errors(InvalidImageError):
            # Opened here, not inside explain(), so the answer can keep the very photo it is about.
            photo = load_image(source)
            explanation = classifier.explain(photo, top_k=top_k, cam_classes=cam_classes)
        prediction = explanation.prediction
        sets = getattr(getattr(classifier, "metadata", None), "prediction_sets", None)
        references = references_html([name for name, _ in prediction.top_k])
        state = ResultState(
            view=explanation.view,
            heatmaps=maps_to_show(explanation),
            captions=tuple(cam_caption(name, p) for name, p in prediction.top_k[:len(explanation.heatmaps)])
            + ((contrast_caption(*explanation.contrast_pair),) if explanation.contrast is not None else ()),
            verdict=prediction.verdict,
            classes=len(prediction.top_k),
            references=bool(references),
            photo=photo_to_keep(photo),
            top1=prediction.top_k[0][0],
            prediction_set=tuple(prediction.prediction_set),
        )
        return (label_value(prediction), verdict_markdown(prediction, sets.level if sets else None),
                render_overlays(state, opacity), references, state)

    return classify


def label_style(state: "ResultState | None") -> tuple:
    """Updates (label, references) that mark a rejected photo's guesses as unlikely (and an unknown species'
    as only the nearest), and hide an empty reference row (a model whose classes have no bundled photos)."""
    if not state:
        return (gr.update(label="Top classes", elem_classes=[]), gr.update(visible=True))
    count = state.classes
    if state.verdict is Verdict.NOT_A_FLOWER:
        label = gr.update(label=f"Top {count} guesses — unlikely: not a flower", elem_classes=["fd-unlikely"])
    elif state.verdict is Verdict.UNKNOWN_SPECIES:
        label = gr.update(label=f"Nearest {count} known species — probably none of them", elem_classes=["fd-unlikely"])
    elif state.verdict is Verdict.TOO_SMALL:
        label = gr.update(label=f"Top {count} guesses — the photo is too small or blurry to be sure", elem_classes=[])
    else:
        label = gr.update(label=f"Top {count} classes", elem_classes=[])
    return label, gr.update(visible=state.references)


def make_auto_classify(classify):
    """The page's own event (Identify, upload, paste, webcam, example click): classify and style in one step, so
    a rejected photo's guesses are never shown unmarked. A cleared or failed input clears every result panel
    and the verdict area says why and what to do (no stale answer, no error toast over the next result)."""

    def cleared(message: str) -> tuple:
        label, references = label_style(None)
        return (gr.update(value=None, **update_props(label)), message, "",
                gr.update(value="", **update_props(references)), None)

    def auto_classify(image, opacity):
        if image is None or image == "" or image == []:  # [] : a cleared list of files (several photos)
            return cleared(READY_MESSAGE)
        try:
            value, verdict, overlays, items, state = classify(image, opacity)
        except gr.Error as error:
            return cleared(error_markdown(error))
        label, references = label_style(state)
        return (gr.update(value=value, **update_props(label)), verdict, overlays,
                gr.update(value=items, **update_props(references)), state)

    return auto_classify


def make_model_info(model: LazyModel, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES):
    """The page-load event filling the model panel. The panel hashes the 18 MB model file, and it cannot change
    while the same classifier is loaded, so it is rendered once per classifier rather than on every page load."""
    rendered: dict = {}

    def model_info():
        try:
            classifier = get_model(model)
        except gr.Error as error:
            return f"**The model could not be loaded.** {error.message}"
        if rendered.get("classifier") is not classifier:
            rendered.update(classifier=classifier, text=model_markdown(classifier, top_k, cam_classes))
        return rendered["text"]

    return model_info


def make_intro(model: LazyModel):
    """The page-load event that puts the model's own number of species into the heading."""

    def intro():
        try:
            return intro_markdown(get_model(model).metadata)
        except gr.Error:
            return intro_markdown(None)  # the model panel says why it could not be loaded

    return intro


def rerender(state, opacity):
    if not state:
        return gr.skip()
    return render_overlays(state, opacity)
