"""``python -m flowerdemo predict``: output formats, per-file errors, exit codes."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_IMAGENET
from corpus import write_corpus
from flowerdemo.cli import CSV_COLUMNS, main

ROOT = Path(__file__).resolve().parent.parent
GOOD = ["exif_orientation_6", "rgba_png", "gray_l_png", "animated_gif", "cmyk_jpeg"]
BAD = ["empty_file", "text_as_jpg", "truncated_jpeg"]


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    write_corpus(folder, GOOD[:3])
    write_corpus(folder / "nested" / "deeper", GOOD[3:])
    write_corpus(folder / "nested", BAD)
    (folder / "readme.txt").write_text("not an image extension: ignored when a folder is scanned")
    return folder


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    write_corpus(folder, GOOD)
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_for_good_and_bad_files(capsys, tiny_model_dir, mixed_dir):
    code, out, err = run(capsys, "predict", "--json", "--top-k", "2", "--batch-size", "3", "--model", tiny_model_dir,
                         mixed_dir)
    assert code == 1
    records = json_lines(out)
    assert len(records) == len(GOOD) + len(BAD)  # readme.txt is not an image
    failed = [r for r in records if "error" in r]
    ok = [r for r in records if "error" not in r]
    assert len(failed) == len(BAD) and len(ok) == len(GOOD)
    for record in failed:
        assert set(record) == {"file", "error"} and record["error"].strip()
    for record in ok:
        assert set(record) == {"file", "top_k", "verdict", "is_flower", "prediction_set", "looks_like", "ood_score", "answer"}
        assert Path(record["file"]).is_file()
        assert len(record["top_k"]) == 2
        assert all(set(entry) == {"label", "prob"} and 0 <= entry["prob"] <= 1 for entry in record["top_k"])
        assert record["verdict"] in ("species", "unknown_species", "not_a_flower")
        assert record["is_flower"] is (record["verdict"] != "not_a_flower")
        assert (record["looks_like"] is not None) == (record["verdict"] == "not_a_flower")
        assert record["looks_like"] is None or record["looks_like"] in TINY_IMAGENET
        # A set only for a named species: its labels are among the model's classes, the top one first.
        if record["verdict"] == "species":
            assert record["prediction_set"][0] == record["top_k"][0]["label"]
        else:
            assert record["prediction_set"] == []
        assert isinstance(record["ood_score"], float)
    assert [r["file"] for r in records] == sorted(r["file"] for r in records)  # recursive, sorted
    assert "Traceback" not in err


def test_bad_files_do_not_spoil_their_batch(capsys, tiny_model_dir, mixed_dir):
    """Same predictions whether good files share a batch with bad ones or go one at a time."""
    _, together, _ = run(capsys, "predict", "--json", "--batch-size", "16", "--model", tiny_model_dir, mixed_dir)
    _, alone, _ = run(capsys, "predict", "--json", "--batch-size", "1", "--model", tiny_model_dir, mixed_dir)
    for a, b in zip(json_lines(together), json_lines(alone), strict=True):
        assert a["file"] == b["file"] and ("error" in a) == ("error" in b)
        if "error" not in a:
            assert [e["label"] for e in a["top_k"]] == [e["label"] for e in b["top_k"]]
            assert a["top_k"][0]["prob"] == pytest.approx(b["top_k"][0]["prob"], abs=1e-4)


def test_exit_0_when_all_files_are_read(capsys, tiny_model_dir, good_dir):
    code, out, _ = run(capsys, "predict", "--json", "--model", tiny_model_dir, good_dir)
    assert code == 0
    assert len(json_lines(out)) == len(GOOD)
    assert all("error" not in r for r in json_lines(out))


def test_missing_file_is_a_per_file_error(capsys, tiny_model_dir, good_dir, tmp_path):
    code, out, _ = run(capsys, "predict", "--json", "--model", tiny_model_dir, good_dir / "rgba.png",
                       tmp_path / "missing.jpg")
    assert code == 1
    first, second = json_lines(out)
    assert "error" not in first
    assert second["file"].endswith("missing.jpg") and "No such file" in second["error"]


def test_csv_header_and_rows(capsys, tiny_model_dir, mixed_dir):
    code, out, _ = run(capsys, "predict", "--csv", "--model", tiny_model_dir, mixed_dir)
    assert code == 1
    rows = list(csv.reader(io.StringIO(out)))
    # the columns clients read keep their places; the taxonomy and the ranked answer come after them
    assert tuple(rows[0]) == CSV_COLUMNS == ("file", "label", "prob", "verdict", "is_flower", "looks_like",
                                             "prediction_set", "ood_score", "scientific_name", "genus", "family",
                                             "answer_rank", "answer_name", "answer_scientific_name",
                                             "answer_probability", "error")
    body = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert len(body) == len(GOOD) + len(BAD)
    for row in body:
        if row["error"]:
            assert row["label"] == row["prob"] == ""
        else:
            assert row["label"] and 0 <= float(row["prob"]) <= 1
            assert row["is_flower"] == ("false" if row["verdict"] == "not_a_flower" else "true")
            assert row["verdict"] in ("species", "unknown_species", "not_a_flower")
            float(row["ood_score"])


def test_table_is_default(capsys, tiny_model_dir, mixed_dir):
    code, out, _ = run(capsys, "predict", "--model", tiny_model_dir, mixed_dir)
    lines = out.splitlines()
    assert code == 1
    assert lines[0].split()[:3] == ["file", "prediction", "prob"]
    assert len(lines) == 1 + len(GOOD) + len(BAD)
    assert sum("ERROR:" in line for line in lines) == len(BAD)


def test_missing_model_exits_2_with_a_clear_message(capsys, good_dir, tmp_path):
    code, out, err = run(capsys, "predict", "--json", "--model", tmp_path / "no_such_model", good_dir)
    assert code == 2
    assert out == ""
    assert "cannot load the model" in err and "no_such_model" in err and "Traceback" not in err


def test_model_folder_without_model_pt_exits_2(capsys, good_dir, tmp_path):
    code, _, err = run(capsys, "predict", "--model", tmp_path, good_dir)
    assert code == 2 and "must contain model.pt" in err


@pytest.mark.parametrize("argv", [
    ["predict"],  # no PATH
    ["predict", "--json", "--csv", "x.jpg"],
    ["predict", "--batch-size", "0", "x.jpg"],
    ["predict", "--top-k", "-1", "x.jpg"],
    ["predict", "--sha256", "abc", "x.jpg"],
    [],  # no command
])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_folder_without_images_exits_2(capsys, tiny_model_dir, tmp_path):
    code, _, err = run(capsys, "predict", "--model", tiny_model_dir, tmp_path)
    assert code == 2 and "no images" in err


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path, good_dir):
    """The real entry point: exit 2 and a one-line message, no traceback, for a model that is not there."""
    completed = subprocess.run(
        [sys.executable, "-m", "flowerdemo", "predict", "--model", str(tmp_path / "nope"), str(good_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "cannot load the model" in completed.stderr and "Traceback" not in completed.stderr
    assert completed.stdout == ""
