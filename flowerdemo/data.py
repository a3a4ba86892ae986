"""Datasets: the Flowers-102 layout (labels.csv + classes.json) or a plain ImageFolder tree."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from .preprocess import PreprocessConfig, eval_transform, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_DATA_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flowers102"
DEFAULT_NONFLOWER_PATH = DEFAULT_DATA_PATH.parent / "nonflowers"


class DatasetLayoutError(ValueError):
    """The data folder is neither the Flowers-102 layout nor an ImageFolder tree."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


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


def load_split(root: str | os.PathLike, split: str, limit_per_class: int | None = None) -> tuple[list[Sample], list[str]]:
    """Samples and class names of one split.

    ``root`` is either the Flowers-102 layout (``labels.csv`` with ``filename,label,split``, ``classes.json``,
    ``images/``) or an ImageFolder tree ``root/<split>/<class name>/*.jpg``.
    """
    root = Path(root)
    if (root / "labels.csv").is_file():
        samples, class_names = _flowers102_split(root, split)
    elif (root / split).is_dir():
        samples, class_names = _imagefolder_split(root / split)
    else:
        raise DatasetLayoutError(
            f"{root} holds neither labels.csv (Flowers-102 layout) nor a '{split}/' folder of class folders"
        )
    if limit_per_class is not None:
        counts: dict[int, int] = {}
        kept = []
        for sample in samples:
            if counts.get(sample.label, 0) < limit_per_class:
                counts[sample.label] = counts.get(sample.label, 0) + 1
                kept.append(sample)
        samples = kept
    if not samples:
        raise DatasetLayoutError(f"split {split!r} of {root} has no images")
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


def training_and_selection_samples(data_path, train_split: str = "train", val_split: str = "val",
                                   val_fraction_for_training: float = 0.0, limit_per_class: int | None = None):
    """(training samples, selection samples, class names): the val images used for model selection,
    calibration and the OOD threshold are never trained on, whatever ``val_fraction_for_training`` moves."""
    train_samples, class_names = load_split(data_path, train_split, limit_per_class)
    val_samples, val_class_names = load_split(data_path, val_split, limit_per_class)
    if val_class_names != class_names:
        raise DatasetLayoutError(f"{train_split} and {val_split} splits name different classes")
    moved, selection = split_by_class(val_samples, val_fraction_for_training) if val_fraction_for_training else ([], val_samples)
    return train_samples + moved, selection, class_names


def _flowers102_split(root: Path, split: str) -> tuple[list[Sample], list[str]]:
    class_names = json.loads((root / "classes.json").read_text())
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    splits = sorted({row["split"] for row in rows})
    if split not in splits:
        raise DatasetLayoutError(f"split must be one of {', '.join(splits)}; got {split!r}")
    samples = [Sample(str(root / "images" / row["filename"]), int(row["label"])) for row in rows if row["split"] == split]
    return samples, class_names


def _imagefolder_split(split_root: Path) -> tuple[list[Sample], list[str]]:
    class_names = sorted(entry.name for entry in split_root.iterdir() if entry.is_dir())
    samples = [
        Sample(str(path), label)
        for label, name in enumerate(class_names)
        for path in sorted((split_root / name).rglob("*"))
        if path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return samples, class_names


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every image file below ``folder``, sorted (recursive)."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
