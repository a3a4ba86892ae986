"""Several photos of one plant: FlowerClassifier.predict_plant / explain_plant, ``predict --together`` and the
``/classify_plant`` callback (called directly, as tests/test_ui.py does), bad files included."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from flowerdemo import ui
from flowerdemo.cli import CSV_COLUMNS, PLANT_CSV_COLUMNS, main
from flowerdemo.core.combine import EmptyPlantError, LeftOutKind, plant_verdict
from flowerdemo.core.decision import decide_from_probabilities
from flowerdemo.core.names import displayed
from flowerdemo.serve.predict import FlowerClassifier
from flowerdemo.ui.plant import CARRIED, make_classify_plant, markdown_text, plant_sources

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return FlowerClassifier.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    """Three flower photos, a byte-for-byte copy of the first under another name, and two files that are not
    images at all."""
    folder = tmp_path_factory.mktemp("plant")
    files = {name: folder / name for name in ("rose.jpg", "sunflower.jpg", "water_lily.jpg")}
    for name, path in files.items():
        shutil.copy(EXAMPLES / name, path)
    files["copy of rose.png"] = folder / "copy of rose.png"  # other bytes, the same pixels
    with Image.open(EXAMPLES / "rose.jpg") as rose:
        rose.convert("RGB").save(files["copy of rose.png"])
    files["holiday.jpg"] = folder / "holiday.jpg"
    files["holiday.jpg"].write_bytes(b"this is not a photo at all")
    files["empty.jpg"] = folder / "empty.jpg"
    files["empty.jpg"].write_bytes(b"")
    return {name: str(path) for name, path in files.items()}


# ------------------------------------------------------------------------------------------ the classifier


def test_one_photo_is_todays_answer_exactly(tiny, photos):
    plant = tiny.predict_plant([photos["rose.jpg"]])
    assert plant.prediction == tiny.predict(photos["rose.jpg"])  # every field, probabilities bit for bit
    assert plant.used == (0,) and plant.left_out == () and plant.carried_by == 0
    assert plant.names == ("rose.jpg",) and plant.carrier == "rose.jpg"


def test_bad_and_repeated_photos_are_named_and_spoil_nothing(tiny, photos):
    plant = tiny.predict_plant([photos["holiday.jpg"], photos["rose.jpg"], photos["copy of rose.png"]])
    assert plant.prediction == tiny.predict(photos["rose.jpg"])  # only the rose counts, once
    unreadable, repeat = plant.left_out
    assert (unreadable.index, unreadable.name, unreadable.kind) == (0, "holiday.jpg", LeftOutKind.UNREADABLE)
    assert "cannot be read" in unreadable.reason
    assert (repeat.index, repeat.kind, repeat.reason) == (2, LeftOutKind.DUPLICATE, "the same photo as rose.jpg")
    assert plant.photos[0] is None and plant.photos[2] == plant.photos[1]
    assert plant.used == (1,) and plant.carrier == "rose.jpg"


def test_several_photos_are_combined_and_answered_with_the_same_rules(tiny, photos):
    names = ["rose.jpg", "sunflower.jpg", "water_lily.jpg"]
    plant = tiny.predict_plant([photos[n] for n in names], top_k=3)
    singles = [tiny.predict(photos[n], top_k=3) for n in names]
    assert plant.photos == tuple(singles)
    assert sum(p for _, p in plant.prediction.top_k) == pytest.approx(1.0)  # 3 classes: all of them
    flowers = [i for i, p in enumerate(singles) if p.is_flower]
    assert len(flowers) >= 2  # the tiny network (seed 0) calls these photos flowers (unknown species)
    assert plant.used == tuple(flowers) and plant.temperature == len(flowers)
    # the mean of the flower photos' log-probabilities, renormalised
    rows = np.array([[dict(s.top_k)[c] for c in tiny.class_names] for s in (singles[i] for i in flowers)])
    expected = np.exp(np.log(rows).mean(0))
    expected /= expected.sum()
    assert dict(plant.prediction.top_k) == pytest.approx(dict(zip(tiny.class_names, expected)), abs=1e-6)
    top = plant.prediction.label
    assert plant.carried_by == max(flowers, key=lambda i: dict(singles[i].top_k)[top])
    # the verdict from the flower photos, and the model's own set rule on the combined probabilities
    verdict = plant_verdict([singles[i].verdict for i in flowers])
    assert plant.prediction.verdict is verdict
    decided = decide_from_probabilities(tiny.metadata, expected[None], [verdict], [0])
    assert plant.prediction.prediction_set == (tuple(tiny.class_names[i] for i in decided.sets[0])
                                               if verdict.has_prediction_set else ())
    assert plant.prediction.ood_score is None  # there is no one photo's "not a flower" score for a plant


def test_explain_plant_maps_the_answer_in_each_photo_it_combined(tiny, photos):
    explanation = tiny.explain_plant([photos["rose.jpg"], photos["holiday.jpg"], photos["sunflower.jpg"]])
    plant = explanation.plant
    assert len(explanation.views) == len(plant.used) == explanation.heatmaps.shape[0]
    assert all(view.size == (224, 224) for view in explanation.views)
    assert np.all((explanation.heatmaps >= 0) & (explanation.heatmaps <= 1))
    assert len(explanation.top_probabilities) == len(plant.used)
    assert explanation.photo.size == Image.open(photos[plant.carrier]).size  # the carrier's whole photo


def test_nothing_usable_and_too_many_are_errors(tiny, photos):
    with pytest.raises(EmptyPlantError, match="None of the 2 photos") as caught:
        tiny.predict_plant([photos["holiday.jpg"], photos["empty.jpg"]])
    assert "holiday.jpg" in str(caught.value) and "empty.jpg" in str(caught.value)
    with pytest.raises(ValueError, match="at most 5"):
        tiny.predict_plant([photos["rose.jpg"]] * 6)


# ------------------------------------------------------------------------------------------ predict --together


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_together_json_is_one_answer_for_the_set(capsys, tiny_model_dir, tiny, photos):
    files = [photos["rose.jpg"], photos["holiday.jpg"], photos["copy of rose.png"], photos["sunflower.jpg"]]
    code, out, err = run(capsys, "predict", "--together", "--json", "--model", tiny_model_dir, *files)
    assert code == 1  # a file could not be read, as for predict
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["files"] == files
    assert set(record) >= {"top_k", "verdict", "is_flower", "prediction_set", "looks_like", "ood_score", "answer",
                           "left_out", "carried_by"}
    assert record["left_out"] == [
        {"file": files[1], "reason": record["left_out"][0]["reason"]},
        {"file": files[2], "reason": f"the same photo as {files[0]}"}] + record["left_out"][2:]
    assert record["left_out"][0]["reason"].startswith("cannot be read")
    assert record["carried_by"] in (files[0], files[3])
    plant = tiny.predict_plant(files, names=files)
    assert record["top_k"] == displayed(plant.prediction).to_dict()["top_k"]
    assert "Traceback" not in err


def test_together_with_one_photo_says_what_predict_says(capsys, tiny_model_dir, photos):
    _, alone, _ = run(capsys, "predict", "--json", "--model", tiny_model_dir, photos["rose.jpg"])
    code, together, _ = run(capsys, "predict", "--together", "--json", "--model", tiny_model_dir, photos["rose.jpg"])
    alone, together = json.loads(alone), json.loads(together)
    assert code == 0
    assert {k: v for k, v in together.items() if k not in ("files", "left_out", "carried_by")} == \
        {k: v for k, v in alone.items() if k != "file"}
    assert together["left_out"] == [] and together["carried_by"] == photos["rose.jpg"]


def test_together_csv_and_table(capsys, tiny_model_dir, photos):
    files = [photos["rose.jpg"], photos["holiday.jpg"]]
    code, out, _ = run(capsys, "predict", "--together", "--csv", "--model", tiny_model_dir, *files)
    header, row = list(csv.reader(io.StringIO(out)))
    assert code == 1 and tuple(header) == PLANT_CSV_COLUMNS
    assert PLANT_CSV_COLUMNS[:len(CSV_COLUMNS) - 1] == CSV_COLUMNS[:-1]  # clients' columns keep their places
    record = dict(zip(header, row))
    assert record["file"] == "|".join(files) and record["carried_by"] == files[0] and record["error"] == ""
    assert record["left_out"].startswith(f"{files[1]}: cannot be read")
    code, out, _ = run(capsys, "predict", "--together", "--model", tiny_model_dir, *files)
    assert code == 1 and "one plant, 1 photo combined" in out and f"left out: {files[1]} (cannot be read" in out
    assert f"carried by: {files[0]}" in out


def test_together_with_nothing_usable_exits_1_with_the_reason(capsys, tiny_model_dir, photos):
    files = [photos["holiday.jpg"], photos["empty.jpg"]]
    code, out, _ = run(capsys, "predict", "--together", "--json", "--model", tiny_model_dir, *files)
    assert code == 1
    record = json.loads(out)
    assert record["files"] == files and "None of the 2 photos" in record["error"]


def test_together_takes_at_most_five_photos(capsys, tiny_model_dir, photos):
    code, out, err = run(capsys, "predict", "--together", "--model", tiny_model_dir, *[photos["rose.jpg"]] * 6)
    assert code == 2 and out == "" and "1 to 5 photos" in err


# ------------------------------------------------------------------------------------------ /classify_plant


@pytest.fixture(scope="module")
def classify_plant(tiny):
    return make_classify_plant(ui.LazyModel(lambda: tiny))


def payload(path: str, name: str | None = None) -> dict:
    """What gr.File(file_count="multiple") hands the callback with preprocess=False (a FileData per file)."""
    return {"path": path, "orig_name": name or Path(path).name, "url": None, "meta": {"_type": "gradio.FileData"}}


def captions(fragment: str) -> list[str]:
    import html
    import re

    return [html.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", fragment)]


def test_classify_plant_answers_once_and_names_the_bad_files(classify_plant, tiny, photos):
    files = [payload(photos["rose.jpg"], "IMG_0001.jpg"), payload(photos["holiday.jpg"]),
             payload(photos["copy of rose.png"]), payload(photos["sunflower.jpg"], "IMG_0002.jpg")]
    label, verdict, overlays, references, state = classify_plant(files, 0.5)
    plant = tiny.predict_plant([photos["rose.jpg"], photos["holiday.jpg"], photos["copy of rose.png"],
                                photos["sunflower.jpg"]], names=["IMG_0001.jpg", "holiday.jpg", "copy of rose.png",
                                                                 "IMG_0002.jpg"])
    assert label == pytest.approx(ui.label_value(plant.prediction))
    assert verdict.startswith("### ") and "For the plant" in verdict
    assert "Left out: holiday\\.jpg (cannot be read" in verdict
    assert f"copy of rose\\.png (the same photo as {markdown_text('IMG_0001.jpg')})" in verdict
    shown = captions(overlays)
    assert len(shown) == len(plant.used) == len(state.views) == len(state.heatmaps)
    assert sum(CARRIED in c for c in shown) == 1  # the photo that carried the answer is marked, once
    assert [c.split(":")[0] for c in shown] == [plant.names[i] for i in plant.used]
    assert state.top1 == plant.prediction.label and state.photo is not None
    assert "Reference photo" in references
    # the opacity slider re-renders each photo's own map over that photo
    assert ui.render_overlays(state, 1.0) != overlays and captions(ui.render_overlays(state, 1.0)) == shown


def test_classify_plant_with_one_photo_says_what_classify_says(classify_plant, tiny, photos):
    classify = ui.make_classify(ui.LazyModel(lambda: tiny))
    label, verdict, *_ = classify(photos["rose.jpg"], 0.5)
    plant_label, plant_verdict, *_ = classify_plant([payload(photos["rose.jpg"])], 0.5)
    assert plant_label == label
    heading, rest = verdict.split("\n", 1)
    assert plant_verdict.startswith(heading + "\n**For the plant, from one photo:** rose\\.jpg.")
    assert rest in plant_verdict


@pytest.mark.parametrize("files, message", [
    (None, "Add one to 5 photos"),
    ([], "Add one to 5 photos"),
    ("six", "At most 5 photos"),
])
def test_classify_plant_input_errors(classify_plant, photos, files, message):
    if files == "six":
        files = [payload(photos["rose.jpg"])] * 6
    with pytest.raises(gr.Error, match=message):
        classify_plant(files, 0.5)


def test_a_set_with_no_usable_photo_is_a_clear_gr_error(classify_plant, photos):
    with pytest.raises(gr.Error) as caught:
        classify_plant([payload(photos["holiday.jpg"]), payload(photos["empty.jpg"]), {"path": None}], 0.5)
    error = caught.value
    assert error.title == ui.presenters.UNREADABLE_TITLE
    assert "None of the 3 photos" in error.message and "holiday.jpg" in error.message and "photo 3" in error.message
    page = ui.make_auto_classify(classify_plant)  # the page: a message in the verdict area, not a crash
    _, verdict, overlays, _, state = page([payload(photos["holiday.jpg"])], 0.5)
    assert verdict.startswith("### Cannot read this image") and overlays == "" and state is None
    assert page([], 0.5)[1] == ui.READY_MESSAGE  # the cleared list of files: back to "add a photo"


def test_plant_sources_accepts_paths_and_names_entries_without_a_file(photos):
    sources, names = plant_sources([photos["rose.jpg"], {"path": None, "orig_name": "odd.jpg"}])
    assert sources == [photos["rose.jpg"], b""] and names == ["rose.jpg", "odd.jpg"]
    assert markdown_text("a_b*[x](y)<img>") == "a\\_b\\*\\[x\\]\\(y\\)\\<img\\>"


def test_classify_plant_is_public_with_files_and_opacity(tiny):
    demo = ui.build_demo(lambda: tiny)
    endpoint = demo.get_api_info()["named_endpoints"]["/classify_plant"]
    assert [p["component"] for p in endpoint["parameters"]] == ["File", "Slider"]
    assert endpoint["returns"][0]["component"] == "Label"
    files = next(b for b in demo.blocks.values() if isinstance(b, gr.File) and b.elem_id == "fd-plant-files")
    assert files.file_count == "multiple"
