"""Display names: the page and the command line show "pink-yellow dahlia", the model keeps the dataset's
"pink-yellow dahlia?" (and the reference thumbnails are still found by it)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from flowerdemo import cli, ui
from flowerdemo.core.names import display_name, displayed
from flowerdemo.serve.predict import Explanation, Prediction

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sunflower.jpg"
DAHLIA = "pink-yellow dahlia?"  # torchvision's Flowers-102 class 59
NAMES = (DAHLIA, "  giant   white arum lily ", "rose")


@pytest.mark.parametrize("name, shown", [
    (DAHLIA, "pink-yellow dahlia"),
    ("  giant   white arum lily ", "giant white arum lily"),
    ("odd ?? ", "odd"),
    ("lotus", "lotus"),
    ("?", "?"),  # nothing would be left: shown as it is
    ("why? not", "why? not"),  # only a trailing mark is the dataset's doubt
])
def test_display_name(name, shown):
    assert display_name(name) == shown


def prediction(verdict="species", prediction_set=(DAHLIA,), probabilities=(0.5, 0.4, 0.1)) -> Prediction:
    return Prediction(top_k=tuple(zip(NAMES, probabilities)), class_indices=(59, 3, 1), verdict=verdict,
                      prediction_set=prediction_set, ood_score=0.25)


def test_displayed_renames_only_the_names():
    shown = displayed(prediction(prediction_set=(DAHLIA, "rose")))
    assert shown.top_k == (("pink-yellow dahlia", 0.5), ("giant white arum lily", 0.4), ("rose", 0.1))
    assert shown.prediction_set == ("pink-yellow dahlia", "rose")
    assert (shown.class_indices, shown.verdict, shown.ood_score) == ((59, 3, 1), "species", 0.25)


class DahliaClassifier:
    """The page's and the command line's view of a model whose classes carry the dataset's names."""

    def __init__(self, verdict="species", prediction_set=(DAHLIA,)):
        self.verdict, self.prediction_set = verdict, prediction_set

    def explain(self, image, top_k=5, cam_classes=3):
        from flowerdemo.core.preprocess import load_image

        answer = prediction(self.verdict, self.prediction_set)
        maps = np.random.default_rng(0).random((cam_classes + 1, 7, 7)).astype(np.float32)
        return Explanation(answer, load_image(image).resize((224, 224)), maps[:-1], maps[-1],
                           (answer.top_k[0][0], answer.top_k[1][0]))

    def predict_batch(self, images, top_k=5):
        return [prediction(self.verdict, self.prediction_set) for _ in images]


def classify(verdict="species", prediction_set=(DAHLIA,)):
    return ui.make_classify(ui.LazyModel(lambda: DahliaClassifier(verdict, prediction_set)))(str(EXAMPLE), 0.5)


def test_the_page_shows_display_names_and_still_finds_the_reference_photo():
    label, verdict, overlays, references, state = classify()
    assert list(label) == ["pink-yellow dahlia", "giant white arum lily", "rose"]
    assert verdict.startswith("### Pink-yellow dahlia\n50.0% likely")
    assert state.captions[0] == "pink-yellow dahlia — 50.0%"
    assert state.captions[-1].startswith("Why pink-yellow dahlia, not giant white arum lily: ")
    assert "1. pink-yellow dahlia" in references and "059.jpg" in references  # looked up by the dataset's name
    assert "?" not in verdict + "".join(state.captions)


@pytest.mark.parametrize("verdict, prediction_set, start", [
    ("species", (DAHLIA, "rose"), "### One of: pink-yellow dahlia, rose\n"),
    ("unknown_species", (), "### A flower I don't know"),
    ("not_a_flower", (), "### Not a flower"),
])
def test_every_verdict_shows_display_names(verdict, prediction_set, start):
    _, text, _, _, _ = classify(verdict, prediction_set)
    assert text.startswith(start) and "pink-yellow dahlia" in text and "dahlia?" not in text
    assert "giant   white" not in text


def test_reference_captions_use_display_names():
    items = ui.reference_items([DAHLIA, "lotus"])
    assert [caption for _, caption in items] == ["1. pink-yellow dahlia", "2. lotus"]
    assert Path(items[0][0]).name == "059.jpg"


@pytest.mark.parametrize("fmt", [["--json"], ["--csv"], []])  # [] is the table
def test_the_command_line_shows_display_names(fmt, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_classifier", lambda model, revision, sha256: DahliaClassifier())
    assert cli.main(["predict", *fmt, str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "pink-yellow dahlia" in out and "dahlia?" not in out
    assert ("giant white arum lily" in out) == (fmt != ["--csv"])  # CSV carries the top name only
    if fmt == ["--json"]:
        record = json.loads(out)
        assert record["top_k"][0]["label"] == "pink-yellow dahlia"
        assert record["prediction_set"] == ["pink-yellow dahlia"]
    elif fmt == ["--csv"]:
        row = list(csv.DictReader(io.StringIO(out)))[0]
        assert (row["label"], row["prediction_set"]) == ("pink-yellow dahlia", "pink-yellow dahlia")
