"""How a class name is shown: the dataset's names stay as they are in the model (the reference thumbnails, the
labels files and the metadata key on them); only what a person reads is tidied.

torchvision's Flowers-102 names class 59 "pink-yellow dahlia?" (the question mark is the dataset's own doubt
about the label), which reads as the app being unsure. :func:`display_name` drops such a trailing mark and
stray spaces; :func:`displayed` applies it to a prediction's names.
"""
from __future__ import annotations

import dataclasses


def display_name(name) -> str:
    """The name as the page and the command line show it: runs of white space made one space, and a trailing
    "?" (with the spaces before it) dropped. A name that would be left empty is shown as it was, stripped."""
    text = " ".join(str(name).split())
    tidied = text.rstrip("?").rstrip()
    return tidied or text


def displayed(prediction):
    """A copy of a :class:`flowerdemo.serve.predict.Prediction` whose top-k and prediction-set names are display names
    (for output only: look up anything keyed by class name with the original)."""
    return dataclasses.replace(
        prediction,
        top_k=tuple((display_name(name), probability) for name, probability in prediction.top_k),
        prediction_set=tuple(display_name(name) for name in prediction.prediction_set))
