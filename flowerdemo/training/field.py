"""Photos from elsewhere: collections other than the training one, in the ``elsewhere/labels.csv`` layout.

``labels.csv`` (``filename,source,kind,class_name,accept``) beside ``images/``:

- ``kind`` ``known``: one of the model's species; ``loose``: a genus-level label (daisy, iris) whose right answers
  are the ``accept`` names; ``unknown``: a species that is not one of the model's (``accept`` empty);
  ``not_a_flower``: a photo that is not of a flower (the feedback store's corrections say so).
- ``accept``: the class names that count as a right answer, ``|``-separated.

The app's feedback store (:mod:`flowerdemo.feedback`) reads as photos from elsewhere too, and ``--extra-data`` may
also be an ImageFolder tree of known species (:func:`extra_training_samples`).

Every photo falls in one of three parts, by a hash of its file name (no seed, no order, the same on every
machine and for every reader): ``train`` (the trainer may learn from it), ``calibration`` (the exporter fits the
temperature, the prediction sets and the verdict thresholds on it) and ``test`` (only reported on). The fractions
are part of the training recipe, so the evaluator knows from a model alone which photos it never saw.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..core.preprocess import list_images
from ..core.verdict import Verdict
from ..feedback import read_records
from .data import DatasetLayoutError, DatasetNotFoundError, Sample

# A photo kind, not a verdict: a photo that is not of a flower, spelled as the verdict it should get (and as the
# feedback store's label kind for it).
NOT_A_FLOWER = Verdict.NOT_A_FLOWER.value
UNKNOWN = "unknown"  # the kind of a photo of a species the model does not know
FIELD_KINDS = ("known", "loose", UNKNOWN, NOT_A_FLOWER)
ANSWERED_KINDS = ("known", "loose")  # kinds whose photos have right answers (their accept names)
FIELD_PARTS = ("train", "calibration", "test")
LABELS_FILE = "labels.csv"
LABEL_COLUMNS = ("filename", "source", "kind", "class_name", "accept")


@dataclass(frozen=True)
class FieldSplit:
    """How photos from elsewhere are shared out: the rest after ``train`` and ``calibration`` is ``test``."""

    train: float = 0.5
    calibration: float = 0.2

    def __post_init__(self) -> None:
        for name in ("train", "calibration"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"the field split's {name} fraction must be in [0, 1), got {value!r}")
        if self.train + self.calibration >= 1.0:
            raise ValueError(f"the field split keeps no test photos: train {self.train} + calibration "
                             f"{self.calibration} must stay below 1")

    def part(self, filename: str) -> str:
        """``train``, ``calibration`` or ``test`` for one photo, from its file name alone."""
        position = photo_position(filename)
        if position < self.train:
            return "train"
        return "calibration" if position < self.train + self.calibration else "test"

    def part_of(self, sample: "FieldSample") -> str:
        """The part of one photo. Photos of species the model does not know are split *by species* (the test
        species are never fitted on, so "a flower I don't know" is measured on species it has never met) and
        have no training share: the trainer never learns from them."""
        if sample.kind == UNKNOWN:
            return "calibration" if photo_position(sample.class_name) < UNKNOWN_CALIBRATION else "test"
        return self.part(sample.path)


UNKNOWN_CALIBRATION = 0.5  # share of unknown species (whole species) fitted on; the rest are only reported on


def photo_position(filename: str) -> float:
    """A number in [0, 1) fixed by the file's base name: uniform over photos, independent of folder and order."""
    digest = hashlib.sha256(Path(filename).name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class FieldSample:
    path: str
    source: str
    kind: str
    class_name: str
    accept: tuple  # class names that count as right; empty for unknown species and non-flowers

    def labels(self, class_index: dict) -> tuple:
        """The accepted class indices (names the model does not have are left out)."""
        return tuple(class_index[name] for name in self.accept if name in class_index)


def read_field_labels(folder: str | Path, labels_file: str | Path | None = None) -> list[FieldSample]:
    """Every row of a ``labels.csv`` whose photo exists under ``folder/images`` (or beside the file)."""
    folder = Path(folder)
    labels_path = Path(labels_file) if labels_file else folder / LABELS_FILE
    if not labels_path.is_file():
        raise DatasetLayoutError(f"{labels_path} not found: a folder of photos from elsewhere needs a {LABELS_FILE} "
                                 f"with the columns {','.join(LABEL_COLUMNS)} (see the README)")
    images = folder / "images" if (folder / "images").is_dir() else folder
    with open(labels_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in LABEL_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise DatasetLayoutError(f"{labels_path} lacks the columns {', '.join(missing)}; it needs "
                                     f"{','.join(LABEL_COLUMNS)}")
        samples = []
        for line, row in enumerate(reader, start=2):
            kind = row["kind"].strip()
            if kind not in FIELD_KINDS:
                raise DatasetLayoutError(f"{labels_path} line {line}: kind must be one of {', '.join(FIELD_KINDS)}, "
                                         f"got {kind!r}")
            accept = tuple(name.strip() for name in (row["accept"] or "").split("|") if name.strip())
            if kind in ANSWERED_KINDS and not accept:
                raise DatasetLayoutError(f"{labels_path} line {line}: a {kind} photo needs its accept names")
            path = images / row["filename"]
            if path.is_file():
                samples.append(FieldSample(str(path), row["source"].strip() or "elsewhere", kind,
                                           row["class_name"].strip(), accept))
    if not samples:
        raise DatasetLayoutError(f"{labels_path} names no photo that exists under {images}")
    return samples


FEEDBACK_KINDS = {"known": "known", "other": UNKNOWN, NOT_A_FLOWER: NOT_A_FLOWER}  # feedback label kind -> kind


def is_feedback_store(folder: str | Path) -> bool:
    """The app's feedback store (imagefolder layout: data/<writer>/metadata.jsonl), not a labels.csv folder."""
    folder = Path(folder)
    return not (folder / LABELS_FILE).is_file() and any(folder.glob("data/*/metadata.jsonl"))


def read_feedback_samples(root: str | Path) -> list[FieldSample]:
    """The corrections people saved on the page (:mod:`flowerdemo.feedback`'s folder), as photos from elsewhere:
    a ``known`` label is that species, ``other`` a species the model does not have, ``not_a_flower`` not a flower.
    Only confirmed records (latest label per photo) are read; an empty or missing folder gives no samples."""
    samples = []
    for record in read_records(root):
        kind = FEEDBACK_KINDS.get(record.get("label_kind"))
        if kind is None:
            raise DatasetLayoutError(f"{record['path']}: label_kind must be one of {', '.join(FEEDBACK_KINDS)}, "
                                     f"got {record.get('label_kind')!r}")
        accept = (record["label"],) if kind == "known" else ()
        samples.append(FieldSample(record["path"], "feedback", kind, record["label"], accept))
    return samples


def field_part(samples: list[FieldSample], split: FieldSplit, part: str) -> list[FieldSample]:
    if part not in FIELD_PARTS + ("all",):
        raise ValueError(f"part must be one of {', '.join(FIELD_PARTS + ('all',))}; got {part!r}")
    return [s for s in samples if part == "all" or split.part_of(s) == part]


def capped_per_class(samples, cap: int) -> list:
    """At most ``cap`` samples per class, chosen by the file-name hash (:func:`photo_position`), not by folder order."""
    kept, counts = [], {}
    for sample in sorted(samples, key=lambda s: photo_position(s.path)):
        if counts.get(sample.label, 0) < cap:
            counts[sample.label] = counts.get(sample.label, 0) + 1
            kept.append(sample)
    return kept


def extra_training_samples(folders, class_names, split) -> list[Sample]:
    """``--extra-data``: photos of known species from other collections, in the ``train`` part of ``split``
    (a :class:`~flowerdemo.training.field.FieldSplit`). Three layouts:

    - ``labels.csv`` with ``kind``/``accept`` (photos from elsewhere, above): a ``known`` or ``loose``
      photo whose accepted names are exactly one of ``class_names``; unknown species are never trained on;
    - the app's feedback store (``metadata.jsonl`` under ``data/``): the corrections people confirmed;
    - an ImageFolder tree (``<class name>/*.jpg``) whose folder names are among ``class_names``.
    """
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for folder in folders:
        folder = Path(folder)
        name = folder.name or str(folder)
        if (folder / LABELS_FILE).is_file():
            rows = read_field_labels(folder)
        elif is_feedback_store(folder):
            rows = read_feedback_samples(folder)
        elif folder.is_dir():
            samples += _imagefolder_extra(folder, index, split)
            continue
        else:
            raise DatasetNotFoundError(f"--extra-data {folder} is not a folder")
        for row in field_part(rows, split, "train"):
            labels = row.labels(index)
            if row.kind in ANSWERED_KINDS and len(labels) == 1 and len(row.accept) == 1:
                samples.append(Sample(row.path, labels[0], f"{name}/{row.source}"))
    return samples


def _imagefolder_extra(folder: Path, index: dict, split) -> list[Sample]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    unknown = [p.name for p in classes if p.name not in index]
    if not classes or unknown:
        raise DatasetLayoutError(f"--extra-data {folder}: expected labels.csv, a feedback store or one folder per "
                                 f"class named as the model's classes" + (f"; unknown: {', '.join(unknown[:5])}" if unknown else ""))
    return [Sample(path, index[path_class.name], folder.name)
            for path_class in classes for path in list_images(path_class) if split.part(path) == "train"]


def field_calibration_rows(folders, split: FieldSplit) -> list[FieldSample]:
    """The photos from elsewhere to calibrate on: the calibration share of every kind of flower (unknown species
    split by species: FieldSplit.part_of). Never the test share."""
    rows = []
    for folder in folders:
        folder = Path(folder)
        every = read_field_labels(folder) if (folder / LABELS_FILE).is_file() else read_feedback_samples(folder)
        rows += [row for row in every if row.kind != NOT_A_FLOWER and split.part_of(row) == "calibration"]
    return rows
