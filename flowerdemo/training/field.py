"""Photos from elsewhere: collections other than the training one, in the ``elsewhere/labels.csv`` layout.

``labels.csv`` (``filename,source,kind,class_name,accept``) beside ``images/``:

- ``kind`` ``known``: one of the model's species; ``loose``: a genus-level label (daisy, iris) whose right answers
  are the ``accept`` names; ``unknown``: a species that is not one of the model's (``accept`` empty);
  ``not_a_flower``: a photo that is not of a flower (the feedback store's corrections say so).
- ``accept``: the class names that count as a right answer, ``|``-separated.

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

from .data import DatasetLayoutError

FIELD_KINDS = ("known", "loose", "unknown", "not_a_flower")
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
            if kind in ("known", "loose") and not accept:
                raise DatasetLayoutError(f"{labels_path} line {line}: a {kind} photo needs its accept names")
            path = images / row["filename"]
            if path.is_file():
                samples.append(FieldSample(str(path), row["source"].strip() or "elsewhere", kind,
                                           row["class_name"].strip(), accept))
    if not samples:
        raise DatasetLayoutError(f"{labels_path} names no photo that exists under {images}")
    return samples


FEEDBACK_KINDS = {"known": "known", "other": "unknown", "not_a_flower": "not_a_flower"}


def read_feedback_samples(root: str | Path) -> list[FieldSample]:
    """The corrections people saved on the page (:mod:`flowerdemo.feedback`'s folder), as photos from elsewhere:
    a ``known`` label is that species, ``other`` a species the model does not have, ``not_a_flower`` not a flower.
    Only confirmed records (latest label per photo) are read; an empty or missing folder gives no samples."""
    from flowerdemo.feedback import read_records

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
    return [s for s in samples if part == "all" or split.part(s.path) == part]
