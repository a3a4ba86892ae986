"""Datasets: the official Flowers-102 through torchvision, any ImageFolder tree, or the labels.csv layout.

Everything downstream works on lists of :class:`Sample` (an image path and a label index), read with the
project's one image loader, so the app, the trainer, the exporter and the evaluator see identical pixels.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from ..core.preprocess import IMAGE_EXTENSIONS, PreprocessConfig, eval_transform, list_images, load_image

# --dataset: torchvision's official Flowers-102 (ROOT/flowers-102/{jpg/,imagelabels.mat,setid.mat}), any
# ImageFolder tree (ROOT/<split>/<class>/*.jpg), or the labels.csv layout (labels.csv, classes.json, images/).
DATASETS = ("flowers102", "imagefolder", "csv")
DEFAULT_DATASET = "flowers102"
DEFAULT_DATA_PATH = "data"  # torchvision's root: --download fills data/flowers-102/
FLOWERS102_SPLITS = ("train", "val", "test")
FLOWERS102_FILES = ("imagelabels.mat", "setid.mat")
MIN_NONFLOWERS = 4  # two to fit the verdict rule, two held out, at the very least


class DatasetLayoutError(ValueError):
    """The data folder does not hold the dataset it was said to hold; the message says what to change."""


class DatasetNotFoundError(DatasetLayoutError):
    """The dataset is missing or partial; the message says how to get it."""


@dataclass(frozen=True)
class DataSource:
    """Which dataset layout to read, where, and whether torchvision may download it (Flowers-102 only)."""

    kind: str = DEFAULT_DATASET
    root: str = DEFAULT_DATA_PATH
    download: bool = False

    def __post_init__(self) -> None:
        if self.kind not in DATASETS:
            raise DatasetLayoutError(f"--dataset must be one of {', '.join(DATASETS)}; got {self.kind!r}")
        if self.download and self.kind != "flowers102":
            raise DatasetLayoutError(f"--download fetches the official Flowers-102 only (--dataset flowers102), "
                                     f"not --dataset {self.kind}")

    @classmethod
    def from_args(cls, args) -> "DataSource":
        return cls(args.dataset, str(args.data_path), bool(getattr(args, "download", False)))


def add_data_arguments(parser) -> None:
    """--dataset, --data-path and --download: the same three options for the trainer, exporter and evaluator."""
    parser.add_argument("--dataset", default=DEFAULT_DATASET, choices=DATASETS,
                        help="flowers102: torchvision's official Flowers-102 under DATA_PATH/flowers-102/ (jpg/, "
                             "imagelabels.mat, setid.mat); imagefolder: DATA_PATH/<split>/<class>/*.jpg; csv: "
                             "labels.csv (filename,label,split), classes.json and images/ (default: %(default)s)")
    parser.add_argument("--data-path", default=DEFAULT_DATA_PATH,
                        help="the dataset's root folder (default: %(default)s)")
    parser.add_argument("--download", action="store_true",
                        help="with --dataset flowers102: let torchvision download it into DATA_PATH/flowers-102/ "
                             "(about 330 MB, MD5-checked) if it is not there yet")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    source: str = "main"  # which collection it came from: the class-balanced sampler evens these out too


class ImageListDataset(Dataset):
    """(path, label) samples read with the project's one image loader."""

    def __init__(self, samples: list[Sample], transform=None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = load_image(sample.path)
        return (self.transform(image) if self.transform else image), sample.label


def eval_loader(samples: list[Sample], preprocess: PreprocessConfig, workers: int = 2, batch_size: int = 32) -> DataLoader:
    """The samples in order, each prepared exactly as the app prepares a photo (the one eval transform)."""
    return DataLoader(ImageListDataset(samples, eval_transform(preprocess)), batch_size=batch_size, num_workers=workers)


def load_split(source: DataSource, split: str, limit_per_class: int | None = None) -> tuple[list[Sample], list[str]]:
    """Samples (image path, label index) and class names of one split of ``source``."""
    readers = {"flowers102": _flowers102_split, "imagefolder": _imagefolder_split, "csv": _csv_split}
    samples, class_names = readers[source.kind](source, split)
    if limit_per_class is not None:
        counts: dict[int, int] = {}
        kept = []
        for sample in samples:
            if counts.get(sample.label, 0) < limit_per_class:
                counts[sample.label] = counts.get(sample.label, 0) + 1
                kept.append(sample)
        samples = kept
    if not samples:
        raise DatasetLayoutError(f"split {split!r} of {source.root} has no images")
    return samples, class_names


def split_by_class(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Deterministically move the first ``round(fraction * n)`` images of each class (in path order) to the
    first list; the rest stay in the second. Stratified, seedless, identical in the trainer and the exporter."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction of val moved to training must be in [0, 1), got {fraction}")
    by_class: dict[int, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.path):
        by_class.setdefault(sample.label, []).append(sample)
    moved, kept = [], []
    for label in sorted(by_class):
        members = by_class[label]
        count = min(int(round(fraction * len(members))), len(members) - 1)  # always keep one for selection
        moved += members[:count]
        kept += members[count:]
    return moved, kept


def training_and_selection_samples(source: DataSource, train_split: str = "train", val_split: str = "val",
                                   val_fraction_for_training: float = 0.0, limit_per_class: int | None = None):
    """(training samples, selection samples, class names): the val images used for model selection,
    calibration and the OOD threshold are never trained on, whatever ``val_fraction_for_training`` moves."""
    train_samples, class_names = load_split(source, train_split, limit_per_class)
    val_samples, val_class_names = load_split(source, val_split, limit_per_class)
    if val_class_names != class_names:
        raise DatasetLayoutError(f"{train_split} and {val_split} splits name different classes")
    moved, selection = split_by_class(val_samples, val_fraction_for_training) if val_fraction_for_training else ([], val_samples)
    return train_samples + moved, selection, class_names


def _flowers102_split(source: DataSource, split: str) -> tuple[list[Sample], list[str]]:
    """The official split through ``torchvision.datasets.Flowers102`` (its own MD5 checks and download)."""
    from torchvision.datasets import Flowers102  # torchvision.datasets: heavy, and only this layout needs it

    if split not in FLOWERS102_SPLITS:
        raise DatasetLayoutError(f"Flowers-102 splits are {', '.join(FLOWERS102_SPLITS)}; got {split!r}")
    if not source.download:
        _check_flowers102_files(Path(source.root))
    try:
        # loader=str: the dataset yields each image's path, read later by the project's own loader
        dataset = Flowers102(source.root, split=split, download=source.download, loader=str)
    except ImportError as error:  # scipy reads the .mat files
        raise DatasetLayoutError(f"torchvision reads Flowers-102's .mat files with scipy ({error}): "
                                 "pip install scipy (it is in requirements-train.txt)") from None
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted" (MD5), or a bad download
        raise DatasetNotFoundError(_flowers102_hint(Path(source.root), f"torchvision says: {error}")) from None
    except OSError as error:  # the download itself failed (no network, HTTP error, disk full)
        raise DatasetNotFoundError(f"downloading Flowers-102 into {source.root} failed ({error}); check the "
                                   "network and try again, or set the folder up by hand (see the README)") from None
    samples = [Sample(path, int(label)) for path, label in dataset]
    missing = [sample.path for sample in samples if not os.path.isfile(sample.path)]
    if missing:
        raise DatasetNotFoundError(_flowers102_hint(
            Path(source.root), f"{len(missing)} of the {len(samples)} {split} images are missing, e.g. {missing[0]}"))
    return samples, list(Flowers102.classes)


def _check_flowers102_files(root: Path) -> None:
    """Say exactly which part of ROOT/flowers-102/ is missing (torchvision only says 'not found or corrupted')."""
    base = root / "flowers-102"
    missing = [name for name in FLOWERS102_FILES if not (base / name).is_file()]
    if not (base / "jpg").is_dir():
        missing.insert(0, "jpg/")
    if missing:
        other = " (it holds labels.csv: did you mean --dataset csv?)" if (root / "labels.csv").is_file() else ""
        raise DatasetNotFoundError(_flowers102_hint(root, f"{base} lacks {', '.join(missing)}{other}"))


def _flowers102_hint(root: Path, problem: str) -> str:
    return (f"Flowers-102 is not usable at {root}: {problem}. Add --download to fetch it there (about 330 MB, "
            f"MD5-checked), or lay existing files out by hand: {root}/flowers-102/ holding imagelabels.mat, setid.mat "
            f"and jpg/ (a symlink to the folder of image_NNNNN.jpg files will do)")


def _csv_split(source: DataSource, split: str) -> tuple[list[Sample], list[str]]:
    root = Path(source.root)
    if not (root / "labels.csv").is_file() or not (root / "classes.json").is_file():
        raise DatasetNotFoundError(f"--dataset csv expects {root}/labels.csv (filename,label,split), "
                                   f"{root}/classes.json and {root}/images/; one of the first two is missing")
    class_names = json.loads((root / "classes.json").read_text())
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    splits = sorted({row["split"] for row in rows})
    if split not in splits:
        raise DatasetLayoutError(f"split must be one of {', '.join(splits)}; got {split!r}")
    samples = [Sample(str(root / "images" / row["filename"]), int(row["label"])) for row in rows if row["split"] == split]
    return samples, class_names


def _imagefolder_split(source: DataSource, split: str) -> tuple[list[Sample], list[str]]:
    """``ROOT/<split>/<class>/...`` through torchvision's ``DatasetFolder`` (classes in sorted order)."""
    from torchvision.datasets import DatasetFolder  # torchvision.datasets: heavy, and only this layout needs it

    folder = Path(source.root) / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"--dataset imagefolder expects {folder}/<class name>/*.jpg; {folder} is not a folder")
    try:
        dataset = DatasetFolder(str(folder), loader=str, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as error:  # no class folders, or a class folder without images
        raise DatasetLayoutError(f"{folder}: {error}") from None
    return [Sample(path, label) for path, label in dataset.samples], list(dataset.classes)


def nonflower_photos(path: str | os.PathLike | None) -> tuple[list[str], list[str]]:
    """(even-numbered photos: they fit the verdict rule, odd-numbered: held out to report on it), in file order."""
    if not path:
        raise DatasetNotFoundError("--nonflowers-path is required: a folder of everyday photos that are not flowers "
                                   "(a few hundred: pets, food, streets, rooms, plants without blooms...)")
    if not Path(path).is_dir():
        raise DatasetNotFoundError(f"--nonflowers-path {path} is not a folder")
    photos = list_images(path)
    if len(photos) < MIN_NONFLOWERS:
        raise DatasetNotFoundError(f"--nonflowers-path {path} holds {len(photos)} images; the 'not a flower' rule "
                                   f"needs a folder of everyday non-flower photos (a few hundred; at least {MIN_NONFLOWERS})")
    return photos[0::2], photos[1::2]
