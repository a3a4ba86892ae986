"""Datasets: the official Flowers-102 through torchvision (tiny .mat files written here, and the real ones when
/work/shared is there), ImageFolder trees, the labels.csv layout, the non-flower folder, and the one-line
messages a missing or partial dataset gets at the command line."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowerdemo.training import evaluate, export, train
from flowerdemo.training.data import (DataSource, DatasetLayoutError, DatasetNotFoundError, load_split, nonflower_photos,
                             training_and_selection_samples)

scipy_io = pytest.importorskip("scipy.io", reason="torchvision reads Flowers-102's .mat files with scipy")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# image id (1-based, as in the official files) -> (split, label index); labels 0, 1 and 77 ("lotus")
TINY_SPLITS = {1: ("train", 0), 2: ("train", 1), 3: ("train", 77), 4: ("train", 0), 5: ("val", 1), 6: ("val", 77),
               7: ("val", 0), 8: ("test", 1), 9: ("test", 77)}
SETID_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def write_tiny_flowers102(root: Path) -> Path:
    """ROOT/flowers-102/ as torchvision lays it out: jpg/image_NNNNN.jpg, imagelabels.mat (1-based labels),
    setid.mat (1-based image ids per split), with 9 generated photos."""
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in TINY_SPLITS:
        pixels = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "jpg" / f"image_{image_id:05d}.jpg")
    labels = np.array([[TINY_SPLITS[i][1] + 1 for i in sorted(TINY_SPLITS)]], dtype=np.uint8)
    scipy_io.savemat(base / "imagelabels.mat", {"labels": labels})
    setid = {key: np.array([[i for i, (s, _) in TINY_SPLITS.items() if s == split]], dtype=np.uint16)
             for split, key in SETID_KEYS.items()}
    scipy_io.savemat(base / "setid.mat", setid)
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_flowers102(tmp_path_factory.mktemp("flowers"))


@pytest.fixture()
def official_md5s(monkeypatch, tiny_root):
    """torchvision checks the .mat files against the official MD5s; point that check at the tiny files' own, so
    its integrity check still runs (and fails on any change), on the files these tests wrote."""
    from torchvision.datasets import Flowers102

    for key, name in (("label", "imagelabels.mat"), ("setid", "setid.mat")):
        digest = hashlib.md5((tiny_root / "flowers-102" / name).read_bytes()).hexdigest()
        monkeypatch.setitem(Flowers102._file_dict, key, (name, digest))
    return tiny_root


def test_flowers102_splits_labels_and_torchvision_class_names(official_md5s):
    source = DataSource("flowers102", str(official_md5s))
    train_samples, names = load_split(source, "train")
    assert [Path(s.path).name for s in train_samples] == [f"image_{i:05d}.jpg" for i in (1, 2, 3, 4)]
    assert [s.label for s in train_samples] == [0, 1, 77, 0]
    assert len(names) == 102 and names[77] == "lotus" and names[59] == "pink-yellow dahlia?"
    assert [s.label for s in load_split(source, "test")[0]] == [1, 77]
    moved_train, selection, _ = training_and_selection_samples(source, val_fraction_for_training=0.5)
    assert len(moved_train) == 4 + 0 and len(selection) == 3  # one val image per class: always kept for selection


def test_a_missing_image_is_a_partial_dataset_with_a_hint(official_md5s, tmp_path):
    root = tmp_path / "partial"
    (root / "flowers-102" / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        os.symlink(official_md5s / "flowers-102" / name, root / "flowers-102" / name)
    for image_id in (1, 2, 3):  # image 4 of train is missing
        os.symlink(official_md5s / "flowers-102" / "jpg" / f"image_{image_id:05d}.jpg",
                   root / "flowers-102" / "jpg" / f"image_{image_id:05d}.jpg")
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 4 train images are missing.*--download"):
        load_split(DataSource("flowers102", str(root)), "train")


def test_mat_files_that_fail_the_md5_check_are_named(tiny_root):
    """Without the patched MD5s the tiny files are 'corrupt' to torchvision: the message says so and how to fix it."""
    with pytest.raises(DatasetNotFoundError, match=r"torchvision says: Dataset not found or corrupted.*--download"):
        load_split(DataSource("flowers102", str(tiny_root)), "train")


def test_missing_flowers102_says_which_files_and_how_to_get_them(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,label,split\n")
    with pytest.raises(DatasetNotFoundError) as caught:
        load_split(DataSource("flowers102", str(tmp_path)), "train")
    message = str(caught.value)
    assert "lacks jpg/, imagelabels.mat, setid.mat" in message and "--download" in message
    assert "symlink" in message and "did you mean --dataset csv?" in message
    with pytest.raises(DatasetLayoutError, match="splits are train, val, test; got 'valid'"):
        load_split(DataSource("flowers102", str(tmp_path)), "valid")


def test_dataset_choices_and_download_are_checked():
    with pytest.raises(DatasetLayoutError, match="one of flowers102, imagefolder, csv; got 'coco'"):
        DataSource("coco", "x")
    with pytest.raises(DatasetLayoutError, match="--download fetches the official Flowers-102 only"):
        DataSource("imagefolder", "x", download=True)


def test_imagefolder_through_torchvision(tmp_path):
    for split, name in (("train", "rose"), ("train", "daisy"), ("val", "daisy")):
        folder = tmp_path / split / name
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "a.png")
    samples, names = load_split(DataSource("imagefolder", str(tmp_path)), "train")
    assert names == ["daisy", "rose"] and [s.label for s in samples] == [0, 1]
    with pytest.raises(DatasetLayoutError, match="name different classes"):
        training_and_selection_samples(DataSource("imagefolder", str(tmp_path)))
    (tmp_path / "val" / "rose").mkdir()  # a class folder without images
    with pytest.raises(DatasetLayoutError, match="Found no valid file for the classes rose"):
        load_split(DataSource("imagefolder", str(tmp_path)), "val")
    with pytest.raises(DatasetNotFoundError, match="test is not a folder"):
        load_split(DataSource("imagefolder", str(tmp_path)), "test")


def test_nonflower_folder_is_required_nonempty_and_split_even_odd(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--nonflowers-path is required: a folder of everyday photos"):
        nonflower_photos(None)
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        nonflower_photos(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="holds 0 images"):
        nonflower_photos(tmp_path)
    for index in range(5):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{index}.jpg")
    fit, holdout = nonflower_photos(tmp_path)
    assert [Path(p).stem for p in fit] == ["0", "2", "4"] and [Path(p).stem for p in holdout] == ["1", "3"]
    assert evaluate.nonflowers_for_report(None, "none") == []
    assert len(evaluate.nonflowers_for_report(str(tmp_path), "all")) == 5


def test_command_lines_answer_a_missing_dataset_in_one_line(tmp_path, capsys):
    assert train.cli(["--data-path", str(tmp_path), "--no-pretrained"]) == 2
    assert export.cli(["--checkpoint", str(tmp_path / "none.pth"), "--nonflowers-path", str(tmp_path)]) == 2
    assert evaluate.cli(["--data-path", str(tmp_path), "--nonflowers-path", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in "".join(errors)
    assert errors[0].startswith("train: error: Flowers-102 is not usable at") and "--download" in errors[0]
    assert errors[1].startswith("export: error: checkpoint not found")
    assert errors[2].startswith("evaluate: error: --nonflowers-path") and "holds 0 images" in errors[2]
    with pytest.raises(SystemExit):  # argparse: export cannot run without the non-flower photos
        export.get_args_parser().parse_args(["--checkpoint", "x.pth"])


def test_trainer_reads_the_official_layout(official_md5s, tmp_path):
    best = train.main(train.get_args_parser().parse_args([
        "--data-path", str(official_md5s), "--output-dir", str(tmp_path), "--epochs", "1", "--batch-size", "2",
        "--train-crop", "32", "--workers", "0", "--no-pretrained", "--freeze-stages", "0"]))
    checkpoint = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert checkpoint["class_names"][77] == "lotus" and len(checkpoint["class_names"]) == 102
    assert best["train_images"] == 4 and checkpoint["model"]["classifier.weight"].shape[0] == 102


@pytest.mark.skipif(not (SHARED / "flowers102-official" / "setid.mat").is_file(), reason="no /work/shared data")
def test_the_official_files_agree_with_the_csv_layout(tmp_path):
    """The symlink recipe of the README over the real files: torchvision's MD5 check passes, and every split has
    the images and labels of labels.csv, under torchvision's class names (2 of them spelled differently)."""
    base = tmp_path / "flowers-102"
    base.mkdir()
    for name in ("imagelabels.mat", "setid.mat"):
        os.symlink(SHARED / "flowers102-official" / name, base / name)
    os.symlink(SHARED / "flowers102" / "images", base / "jpg")
    official, csv_layout = DataSource("flowers102", str(tmp_path)), DataSource("csv", str(SHARED / "flowers102"))
    for split, count in (("train", 1020), ("val", 1020), ("test", 6149)):
        ours, names = load_split(official, split)
        theirs, csv_names = load_split(csv_layout, split)
        assert len(ours) == count
        assert sorted((Path(s.path).name, s.label) for s in ours) == sorted((Path(s.path).name, s.label) for s in theirs)
    renamed = {old: new for old, new in zip(csv_names, names) if old != new}
    assert renamed == {"lotus lotus": "lotus", "pink-yellow dahlia": "pink-yellow dahlia?"}
    assert json.loads((SHARED / "flowers102" / "classes.json").read_text()) == csv_names
