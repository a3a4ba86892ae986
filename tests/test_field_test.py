"""The field test: figures on photos from elsewhere against a hand count, the split the model's recipe records,
the evaluator's command line on the tiny model (its answers are the app's), and the model card's table."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerdemo.core.verdict import Verdict
from flowerdemo.training import evaluate, field_report
from flowerdemo.training.field import FieldSplit, read_field_labels
from flowerdemo.training.field_report import PhotoAnswer

CLASS_NAMES = ("pink primrose", "sunflower", "rose", "oxeye daisy", "barbeton daisy", "daffodil", "tiger lily")
PRIMROSE, SUNFLOWER, ROSE, OXEYE, BARBETON, DAFFODIL, TIGER = range(7)

# filename, source, kind, class_name, accept; then what the (fake) model answered: ranked, set, verdict.
ROWS = [
    ("a1.jpg", "alpha", "known", "sunflower", "sunflower",
     (SUNFLOWER, PRIMROSE, ROSE, OXEYE, BARBETON), (SUNFLOWER,), "species"),
    ("a2.jpg", "alpha", "known", "sunflower", "sunflower",
     (ROSE, SUNFLOWER, PRIMROSE, OXEYE, BARBETON), (ROSE,), "unknown_species"),
    # A genus-level label: either daisy is right; "shasta daisy" is not among the model's names and is ignored.
    ("a3.jpg", "alpha", "loose", "daisy", "oxeye daisy|barbeton daisy|shasta daisy",
     (BARBETON, OXEYE, PRIMROSE, ROSE, SUNFLOWER), (BARBETON, OXEYE), "species"),
    ("a4.jpg", "alpha", "unknown", "snowdrop", "", (PRIMROSE, ROSE, SUNFLOWER, OXEYE, BARBETON), (PRIMROSE,), "species"),
    ("a5.jpg", "alpha", "unknown", "snowdrop", "", (PRIMROSE, ROSE, SUNFLOWER, OXEYE, BARBETON), (PRIMROSE,),
     "unknown_species"),
    ("b1.jpg", "beta", "known", "rose", "rose",
     (PRIMROSE, SUNFLOWER, OXEYE, BARBETON, ROSE), (PRIMROSE, SUNFLOWER), "not_a_flower"),
    ("b2.jpg", "beta", "known", "rose", "rose",
     (PRIMROSE, SUNFLOWER, OXEYE, BARBETON, DAFFODIL), (PRIMROSE, SUNFLOWER, OXEYE), "species"),
    ("b3.jpg", "beta", "unknown", "bluebell", "", (TIGER, ROSE, SUNFLOWER, OXEYE, BARBETON), (TIGER,), "not_a_flower"),
]


def write_field_folder(folder: Path, rows, colour=(200, 40, 60)) -> Path:
    """labels.csv and images/ in the layout of ../shared/data/elsewhere."""
    images = folder / "images"
    images.mkdir(parents=True)
    lines = ["filename,source,kind,class_name,accept"]
    rng = np.random.default_rng(0)
    for filename, source, kind, class_name, accept, *_ in rows:
        pixels = np.clip(np.array(colour) + rng.integers(-30, 30, size=(72, 88, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / filename, quality=90)
        lines.append(f"{filename},{source},{kind},{class_name},{accept}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def hand_made_report(tmp_path, rows=ROWS):
    samples = read_field_labels(write_field_folder(tmp_path / "elsewhere", rows))
    by_file = {row[0]: PhotoAnswer(row[5], row[6], row[7]) for row in rows}
    answers = [by_file[Path(sample.path).name] for sample in samples]
    return field_report.field_report(samples, answers, CLASS_NAMES, labels="labels.csv", part="all", split_train=0.5,
                                     split_calibration=0.2, split_from="defaults", set_level=0.95)


def test_figures_per_source_match_a_hand_count(tmp_path):
    report = hand_made_report(tmp_path)
    alpha, beta = report.sources
    assert (alpha.name, beta.name, report.images) == ("alpha", "beta", 8)
    # alpha: a1 right; a2 wrong at top-1, right in the top 5, its set misses; a3 right (either daisy).
    assert (alpha.images, alpha.answered) == (5, 3)
    assert alpha.top1 == pytest.approx(2 / 3) and alpha.top5 == 1.0
    assert alpha.coverage == pytest.approx(2 / 3) and alpha.mean_set_size == pytest.approx(4 / 3)
    assert alpha.verdicts == {"species": pytest.approx(2 / 3), "unknown_species": pytest.approx(1 / 3),
                              "not_a_flower": 0.0, "too_small": 0.0, "images": 3}
    assert alpha.unknown_species == {"species": 0.5, "unknown_species": 0.5, "not_a_flower": 0.0, "too_small": 0.0, "images": 2}
    # beta: b1's rose is fifth (top-5 right), b2 has no rose at all; neither set holds it.
    assert (beta.top1, beta.top5, beta.coverage, beta.mean_set_size) == (0.0, 0.5, 0.0, 2.5)
    assert beta.verdicts == {"species": 0.5, "unknown_species": 0.0, "not_a_flower": 0.5, "too_small": 0.0, "images": 2}
    assert beta.unknown_species == {"species": 0.0, "unknown_species": 0.0, "not_a_flower": 1.0, "too_small": 0.0, "images": 1}
    assert alpha.not_a_flower is None and beta.not_a_flower is None


def test_overall_figures_and_per_species_rows_match_a_hand_count(tmp_path):
    overall = hand_made_report(tmp_path).overall
    assert (overall.images, overall.answered) == (8, 5)
    assert (overall.top1, overall.top5, overall.coverage) == (pytest.approx(2 / 5), pytest.approx(4 / 5), pytest.approx(2 / 5))
    assert overall.mean_set_size == pytest.approx(9 / 5)
    assert overall.unknown_species["species"] == pytest.approx(1 / 3)  # named as one of the known species
    assert overall.unknown_species["images"] == 3
    rows = {row.class_name: row for row in overall.species}
    assert [row.class_name for row in overall.species] == ["rose", "sunflower", "daisy", "bluebell", "snowdrop"]
    assert (rows["sunflower"].images, rows["sunflower"].top1, rows["sunflower"].coverage) == (2, 0.5, 0.5)
    assert (rows["rose"].top1, rows["rose"].coverage) == (0.0, 0.0)
    assert (rows["daisy"].kind, rows["daisy"].top1, rows["daisy"].coverage) == ("loose", 1.0, 1.0)
    assert rows["snowdrop"].top1 is None and rows["snowdrop"].verdicts["species"] == 0.5
    assert rows["bluebell"].verdicts["not_a_flower"] == 1.0


def test_the_report_is_plain_json_with_every_source_and_the_whole(tmp_path):
    report = hand_made_report(tmp_path).to_dict()
    again = json.loads(json.dumps(report))
    assert again == report
    assert set(again["sources"]) == {"alpha", "beta"} and again["all"]["images"] == 8
    assert again["split"] == {"train": 0.5, "calibration": 0.2, "from": "defaults"} and again["part"] == "all"
    text = field_report.format_field_report(hand_made_report(tmp_path / "again"))
    assert "alpha (5 photos, 3 of known species)" in text and "2 photos of unknown species" in text


def test_verdict_names_come_from_the_verdict_type_so_every_verdict_is_counted(tmp_path):
    # the mix is keyed by every Verdict member, so a verdict added to the type is counted without touching reports
    rows = [ROWS[0][:7] + ("too_small",)] + ROWS[1:]
    alpha = hand_made_report(tmp_path, rows).sources[0]
    assert alpha.verdicts["too_small"] == pytest.approx(1 / 3) and alpha.verdicts["species"] == pytest.approx(1 / 3)
    assert alpha.unknown_species["too_small"] == 0.0


def test_a_model_without_sets_or_verdicts_still_gets_top1(tmp_path):
    rows = [row[:6] + (None, None) for row in ROWS]
    overall = hand_made_report(tmp_path, rows).overall
    assert overall.top1 == pytest.approx(2 / 5)
    assert (overall.coverage, overall.mean_set_size, overall.verdicts, overall.unknown_species) == (None, None, None, None)


class FakeMetadata:
    def __init__(self, training_args):
        self.training_args = training_args


def test_the_split_comes_from_the_recipe_when_it_records_one():
    assert evaluate.field_split_of(FakeMetadata({"epochs": 3})) == (FieldSplit(), "defaults")
    assert evaluate.field_split_of(FakeMetadata({"field_train_fraction": 0.6, "field_calibration_fraction": 0.1})) \
        == (FieldSplit(0.6, 0.1), "recipe")
    assert evaluate.field_split_of(FakeMetadata({"field_train_fraction": 0.4})) == (FieldSplit(0.4, 0.2), "recipe")
    with pytest.raises(evaluate.EvaluationError, match="field_train_fraction"):
        evaluate.field_split_of(FakeMetadata({"field_train_fraction": 0.9, "field_calibration_fraction": 0.2}))


# --- the command line on the tiny model (classes: pink primrose, sunflower, rose) --------------------------------

TINY_ROWS = [(f"{source}__{name}_{index}.jpg", source, kind, name, accept)
             for source in ("one", "two") for index in range(3)
             for kind, name, accept in (("known", "sunflower", "sunflower"), ("loose", "roses", "rose|dog rose"),
                                        ("unknown", "snowdrop", ""))]


@pytest.mark.slow
def test_cli_field_test_on_the_tiny_model_gives_the_apps_answers(tmp_path, tiny_model_dir, classifier, capsys):
    folder = write_field_folder(tmp_path / "elsewhere", TINY_ROWS)
    output = tmp_path / "report.json"
    assert evaluate.cli(["--model", str(tiny_model_dir), "--field-data", str(folder), "--field-part", "all",
                         "--output-json", str(output), "--workers", "0"]) == 0
    field = json.loads(output.read_text())["field"]
    assert "split" not in json.loads(output.read_text())  # --field-data alone skips the Flowers-102 split
    assert (field["images"], field["part"], set(field["sources"])) == (18, "all", {"one", "two"})
    assert field["labels"] == "elsewhere/labels.csv"  # no machine path: it travels into the model card
    # The same photos through the app's own predictor: the evaluator's figures must be its answers.
    samples = read_field_labels(folder)
    predictions = classifier.predict_batch([s.path for s in samples])
    answered = [(s, p) for s, p in zip(samples, predictions) if s.kind != "unknown"]
    assert field["all"]["top1"] == pytest.approx(np.mean([p.label in s.accept for s, p in answered]))
    verdicts = [p.verdict for s, p in answered]
    for name in (verdict.value for verdict in Verdict):
        assert field["all"]["verdicts"][name] == pytest.approx(verdicts.count(name) / len(verdicts))
    unknown = [p.verdict for s, p in zip(samples, predictions) if s.kind == "unknown"]
    assert field["all"]["unknown_species"]["species"] == pytest.approx(unknown.count("species") / len(unknown))
    assert "photos from elsewhere" in capsys.readouterr().out


def test_cli_field_test_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    folder = write_field_folder(tmp_path / "elsewhere", [("x.jpg", "one", "known", "daffodil", "daffodil")])
    assert evaluate.cli(["--model", str(tiny_model_dir), "--field-data", str(folder), "--field-part", "all",
                         "--output-json", str(tmp_path / "r.json")]) == 2
    assert "accept names for 'daffodil' are none of the model's 3 class names" in capsys.readouterr().err
    part = FieldSplit().part("x.jpg")
    other = next(name for name in ("train", "calibration", "test") if name != part)
    assert evaluate.cli(["--model", str(tiny_model_dir), "--field-data", str(folder), "--field-part", other]) == 2
    assert f"falls in the '{other}' part" in capsys.readouterr().err
    assert evaluate.cli(["--model", str(tiny_model_dir), "--split", "none"]) == 2
    assert "--split none leaves nothing to evaluate" in capsys.readouterr().err


def test_the_model_card_shows_photos_from_elsewhere(tmp_path, tiny_model_dir):
    from flowerdemo.core.artifact import load_artifact
    from flowerdemo.training.model_card import render_model_card

    _, metadata = load_artifact(tiny_model_dir / "model.pt")
    assert "Photos from elsewhere" not in render_model_card(metadata)
    field = hand_made_report(tmp_path).to_dict()
    card = render_model_card(replace(metadata, metrics=dict(metadata.metrics, field=field)))
    section = card[card.index("## Photos from elsewhere"):]
    assert "part `all`" in section and "8 photos" in section
    assert "| alpha | 3 | 66.67% | 100.00% | 66.67% (1.33) | 66.67% / 33.33% / 0.00% / 0.00% | 2 | 50.00% / 50.00% / 0.00% / 0.00% |" \
        in section
    assert "| all sources | 5 | 40.00% | 80.00% | 40.00% (1.80) |" in section


def test_the_feedback_store_is_a_field_test_and_extra_training_data(tmp_path, tiny_model_dir, classifier):
    """Corrections saved on the page: `evaluate --field-data feedback/` scores a model on them, and
    `train --extra-data feedback/` reads the known species among them."""
    from PIL import Image

    from flowerdemo.feedback import FeedbackStore
    from flowerdemo.training.field import FieldSplit, extra_training_samples

    store = FeedbackStore(tmp_path / "feedback", class_names=classifier.class_names)
    rng = np.random.default_rng(0)
    labels = [("rose", "known"), ("sunflower", "known"), ("a tulip", "other"), ("", "not_a_flower")] * 3
    for label, kind in labels:
        photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        store.save(photo, label, kind, top1="rose", verdict="species", prediction_set=["rose"], model_sha256="0" * 64)
    output = tmp_path / "report.json"
    assert evaluate.cli(["--model", str(tiny_model_dir), "--field-data", str(tmp_path / "feedback"),
                         "--field-part", "all", "--output-json", str(output), "--workers", "0"]) == 0
    field = json.loads(output.read_text())["field"]
    assert field["images"] == 12 and set(field["sources"]) == {"feedback"}
    assert field["labels"] == "feedback/ (feedback store)"
    assert field["all"]["answered"] == 6 and field["all"]["unknown_species"]["images"] == 3
    assert field["all"]["not_a_flower"]["images"] == 3
    trained = extra_training_samples([tmp_path / "feedback"], classifier.class_names, FieldSplit(0.99, 0.0))
    every_known = [r for r in store_records(tmp_path / "feedback") if r["label_kind"] == "known"]
    assert {classifier.class_names[s.label] for s in trained} <= {"rose", "sunflower"}
    assert len(trained) == sum(FieldSplit(0.99, 0.0).part(r["path"]) == "train" for r in every_known)


def store_records(root):
    from flowerdemo.feedback import read_records

    return read_records(root)
