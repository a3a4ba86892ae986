"""The bundled examples tell the truth: run through the app's own handler with the bundled model, every
non-flower example is called not_a_flower and says what it looks like, every flower example is accepted and
named as its species (or a genus or family that holds it), or honestly "not sure" with it among the top classes."""
from __future__ import annotations

from pathlib import Path

import pytest

from flowerdemo import ui
from flowerdemo.serve.predict import FlowerClassifier

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "weights" / "model.pt"

pytestmark = pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled weights/model.pt is not in this checkout")


@pytest.fixture(scope="module")
def bundled():
    return FlowerClassifier.load(str(ROOT / "weights"))


@pytest.mark.parametrize("path", ui.example_files(), ids=lambda p: p.stem)
def test_example_gets_the_right_kind_of_answer(bundled, path):
    label, verdict, overlays, references, state = ui.make_classify(ui.LazyModel(lambda: bundled))(str(path), 0.5)
    prediction = bundled.predict(str(path))
    assert state.verdict == prediction.verdict  # the page and the core agree
    if path.stem.startswith("not_a_flower"):
        assert prediction.verdict == "not_a_flower", (path.name, prediction.top_k[0])
        assert prediction.looks_like and prediction.looks_like in bundled.metadata.imagenet_class_names
        assert verdict.startswith(f"### Not a flower\nIt looks like {ui._with_article(prediction.looks_like)}.")
    else:
        species = path.stem.replace("_", " ")
        assert prediction.verdict == "species", (path.name, prediction.verdict)
        # Never wrong: named outright or by a genus or family that holds it, or honestly "not sure" with it among
        # the top classes the page lists (the water lily: lotus, magnolia and siam tulip are likelier).
        answer, index = prediction.answer, bundled.metadata.class_names.index(species)
        named = answer.rank is not None and index in answer.classes and species in verdict.lower()
        unsure = (answer.rank is None and verdict.startswith("### Not sure\n")
                  and species in [name for name, _ in prediction.top_k])
        assert named or unsure, (path.name, answer, prediction.top_k)


def test_the_examples_include_each_kind():
    stems = [p.stem for p in ui.example_files()]
    assert sum(s.startswith("not_a_flower") for s in stems) >= 2 and len(stems) >= 8
