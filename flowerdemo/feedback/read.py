"""Readers: every writer's confirmed records, and the summary of what people said (``flowerdemo feedback summary``).
``datasets.load_dataset("imagefolder", data_dir=ROOT)`` reads the same folder as is."""
from __future__ import annotations

import collections
from pathlib import Path

from ..core.verdict import Verdict
from .files import METADATA_FILE, PREDICTION_SET_SEPARATOR, read_metadata, writer_folders
from .labels import NOT_A_FLOWER_LABEL, UNKNOWN_SPECIES_ANSWER, LabelKind, as_verdict


def read_records(root) -> list[dict]:
    """Every writer's confirmed records whose photo is there, the latest label per photo, oldest first. Each is
    the stored record plus ``path`` (the photo), ``record_id`` and ``writer_id``; ``prediction_set`` is a list.
    Values are the stored words (plain strings): :func:`as_verdict` and ``LabelKind(...)`` turn them into members."""
    latest: dict[str, dict] = {}
    for folder in writer_folders(root):
        for record in read_metadata(folder / METADATA_FILE):
            path = folder / record["file_name"]
            if Path(record["file_name"]).name != record["file_name"] or not path.is_file():
                continue
            record_id = Path(record["file_name"]).stem
            joined = record.get("prediction_set") or ""
            record = {**record, "path": str(path), "record_id": record_id, "writer_id": folder.name,
                      "prediction_set": [name for name in joined.split(PREDICTION_SET_SEPARATOR) if name]}
            if record_id not in latest or record.get("time", "") >= latest[record_id].get("time", ""):
                latest[record_id] = record
    return sorted(latest.values(), key=lambda record: (record.get("time", ""), record["record_id"]))


def _label_kind(record: dict) -> LabelKind | None:
    try:
        return LabelKind(record.get("label_kind"))
    except (ValueError, TypeError):  # a hand-edited record
        return None


def model_answer(record: dict) -> str:
    """What the model told the person: its verdict when it said it is no flower or no species it knows."""
    verdict = as_verdict(record.get("verdict"))
    if verdict is Verdict.NOT_A_FLOWER:
        return NOT_A_FLOWER_LABEL
    if verdict is Verdict.UNKNOWN_SPECIES:
        return UNKNOWN_SPECIES_ANSWER
    return record.get("model_top1") or "?"


def agrees(record: dict) -> bool:
    """The person confirmed the model: the same species, or the same "no flower" / "not one of mine" call."""
    verdict, kind = as_verdict(record.get("verdict")), _label_kind(record)
    if verdict is Verdict.NOT_A_FLOWER:
        return kind is LabelKind.NOT_A_FLOWER
    if verdict is Verdict.UNKNOWN_SPECIES:
        return kind is LabelKind.OTHER
    return kind is LabelKind.KNOWN and record["label"] == model_answer(record)


def summary(root, top: int = 10) -> str:
    """Counts by label and the corrections people made most often (``model's answer -> their name: count``)."""
    records = read_records(root)
    if not records:
        return f"no feedback in {root}"
    confirmed = sum(agrees(record) for record in records)
    lines = [f"{len(records)} photo(s) labelled in {root}: {confirmed} confirmed the model's answer, "
             f"{len(records) - confirmed} corrected it", "", "By label:"]
    by_label = collections.Counter(record["label"] for record in records)
    lines += [f"  {label}: {count}" for label, count in sorted(by_label.items(), key=lambda item: (-item[1], item[0]))]
    pairs = collections.Counter((model_answer(record), record["label"]) for record in records if not agrees(record))
    if pairs:
        lines += ["", "Most corrected (the model said -> people said):"]
        ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
        lines += [f"  {said} -> {label}: {count}" for (said, label), count in ranked]
    return "\n".join(lines)
