"""The figures of a field test: how a model does on photos from elsewhere (``field.py``'s ``labels.csv`` layout).

numpy-free and network-free on purpose: :func:`field_report` takes each photo's answer (its ranked classes, its
prediction set, its verdict) as the evaluator computed it, so the figures can be checked against a hand count.

- Photos of ``known`` and ``loose`` kinds have right answers (their ``accept`` names): top-1 and top-5 count a
  prediction as right when it is any of them, a prediction set covers the photo when it holds any of them.
- Photos of ``unknown`` species (not among the model's) and ``not_a_flower`` photos have none: for them the
  verdict mix is the figure (how many were named as one of the known species, called "a flower I don't know",
  "not a flower", or any other verdict).

Verdict names come from :class:`flowerdemo.core.verdict.Verdict`, read when a report is made, so a verdict added there
shows up here without a change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..core.ranks import Answer
from ..core.verdict import Verdict
from .answer_report import answer_figures, format_answers, named_as_species
from .field import ANSWERED_KINDS, FIELD_KINDS, NOT_A_FLOWER, UNKNOWN, FieldSample

OVERALL = "all"  # the name of the group that holds every source
SPECIES_ROWS = Verdict.SPECIES.value  # the JSON key of a group's per-species rows (not a verdict; the same word)


@dataclass(frozen=True)
class PhotoAnswer:
    """What the model said about one photo, in class indices."""

    ranked: tuple  # the most likely classes, most likely first (at least five where the model has five)
    prediction_set: tuple | None = None  # the conformal set's classes; None when the model ships no set rule
    verdict: Verdict | None = None  # None when the model ships no verdict rule
    answer: Answer | None = None  # the deepest sure-enough taxon (core.ranks)
    group: int = 0  # the photo group the model's rules were applied for


def verdict_shares(verdicts: Sequence[str]) -> dict:
    """The share of each verdict in ``verdicts`` (every Verdict, zeros included) and their count."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("verdict shares need at least one verdict")
    return {v.value: verdicts.count(v) / len(verdicts) for v in Verdict} | {"images": len(verdicts)}


@dataclass(frozen=True)
class SpeciesFigures:
    """One ``class_name`` of the labels file within a group."""

    class_name: str
    kind: str
    images: int
    top1: float | None  # None for kinds without right answers
    coverage: float | None  # None without right answers or without a set rule
    verdicts: dict | None  # verdict_shares; None without a verdict rule

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "kind": self.kind, "images": self.images, "top1": self.top1,
                "coverage": self.coverage, "verdicts": self.verdicts}


@dataclass(frozen=True)
class GroupFigures:
    """One source of photos (or all of them): the figures of the issue's field test."""

    name: str
    images: int  # every photo of the group, whatever its kind
    answered: int  # known and loose photos: those with right answers
    top1: float | None
    top5: float | None
    coverage: float | None  # share of answered photos whose prediction set holds a right answer
    mean_set_size: float | None
    verdicts: dict | None  # verdict mix on the answered photos
    unknown_species: dict | None  # verdict mix on photos of species the model does not know
    not_a_flower: dict | None  # verdict mix on photos that are not of flowers
    species: tuple = ()  # SpeciesFigures, by kind then name
    answers: dict | None = None  # answer_report.answer_figures of the answered photos
    unknown_named: float | None = None  # share of unknown-species photos named as a species

    def to_dict(self) -> dict:
        return {"images": self.images, "answered": self.answered, "top1": self.top1, "top5": self.top5,
                "coverage": self.coverage, "mean_set_size": self.mean_set_size, "verdicts": self.verdicts,
                Verdict.UNKNOWN_SPECIES.value: self.unknown_species, Verdict.NOT_A_FLOWER.value: self.not_a_flower,
                SPECIES_ROWS: [row.to_dict() for row in self.species], "answers": self.answers,
                "unknown_named_as_species": self.unknown_named}


@dataclass(frozen=True)
class FieldReport:
    labels: str  # the labels file read: its folder's name and its own (no machine path)
    part: str  # train / calibration / test / all
    split_train: float  # the fractions that decided the parts
    split_calibration: float
    split_from: str  # "recipe" (the model's training_args) or "defaults" (FieldSplit's)
    set_level: float | None  # the prediction sets' promised coverage
    sources: tuple  # GroupFigures, one per source in name order
    overall: GroupFigures

    @property
    def images(self) -> int:
        return self.overall.images

    def to_dict(self) -> dict:
        return {"labels": self.labels, "part": self.part, "images": self.images,
                "split": {"train": self.split_train, "calibration": self.split_calibration, "from": self.split_from},
                "set_level": self.set_level, "sources": {group.name: group.to_dict() for group in self.sources},
                OVERALL: self.overall.to_dict()}


def _share(flags: list) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def _verdict_mix(answers: list[PhotoAnswer]) -> dict | None:
    if not answers or any(answer.verdict is None for answer in answers):
        return None
    return verdict_shares([answer.verdict for answer in answers])


def _hits(pairs, depth: int) -> list[bool]:
    return [any(index in accepted for index in answer.ranked[:depth]) for accepted, answer in pairs]


def _covered(pairs) -> list[bool] | None:
    if any(answer.prediction_set is None for _, answer in pairs):
        return None
    return [any(index in accepted for index in answer.prediction_set) for accepted, answer in pairs]


def _species_rows(rows, class_index: dict) -> tuple:
    by_name: dict = {}
    for sample, answer in rows:
        by_name.setdefault((sample.kind, sample.class_name), []).append((sample, answer))
    figures = []
    for (kind, name), members in sorted(by_name.items(), key=lambda item: (FIELD_KINDS.index(item[0][0]), item[0][1])):
        pairs = [(s.labels(class_index), a) for s, a in members] if kind in ANSWERED_KINDS else []
        covered = _covered(pairs) if pairs else None
        figures.append(SpeciesFigures(name, kind, len(members), _share(_hits(pairs, 1)) if pairs else None,
                                      _share(covered) if covered is not None else None,
                                      _verdict_mix([a for _, a in members])))
    return tuple(figures)



def group_figures(name: str, rows: list, class_index: dict, group_names: Sequence[str] = ()) -> GroupFigures:
    """The figures of (FieldSample, PhotoAnswer) ``rows``; ``class_index`` maps the model's names to indices."""
    answered = [(s.labels(class_index), a) for s, a in rows if s.kind in ANSWERED_KINDS]
    covered = _covered(answered)
    sizes = [len(a.prediction_set) for _, a in answered] if covered is not None else []
    return GroupFigures(
        name=name, images=len(rows), answered=len(answered),
        top1=_share(_hits(answered, 1)), top5=_share(_hits(answered, 5)),
        coverage=_share(covered) if covered is not None else None, mean_set_size=_mean(sizes),
        verdicts=_verdict_mix([a for _, a in answered]),
        unknown_species=_verdict_mix([a for s, a in rows if s.kind == UNKNOWN]),
        not_a_flower=_verdict_mix([a for s, a in rows if s.kind == NOT_A_FLOWER]),
        species=_species_rows(rows, class_index),
        answers=answer_figures([accepted for accepted, _ in answered], [a.answer for _, a in answered],
                               [a.prediction_set for _, a in answered], [a.group for _, a in answered], group_names),
        unknown_named=named_as_species([a.answer for s, a in rows if s.kind == UNKNOWN]))


def field_report(samples: Sequence[FieldSample], answers: Sequence[PhotoAnswer], class_names: Sequence[str], *,
                 labels: str, part: str, split_train: float, split_calibration: float, split_from: str,
                 set_level: float | None = None, group_names: Sequence[str] = ()) -> FieldReport:
    """Per source and overall figures of ``answers`` (one per sample, in the same order)."""
    if len(samples) != len(answers):
        raise ValueError(f"one answer per photo: {len(samples)} photos, {len(answers)} answers")
    if not samples:
        raise ValueError("a field report needs at least one photo")
    class_index = {name: index for index, name in enumerate(class_names)}
    rows = list(zip(samples, answers))
    sources = tuple(group_figures(source, [row for row in rows if row[0].source == source], class_index, group_names)
                    for source in sorted({sample.source for sample in samples}))
    return FieldReport(labels=labels, part=part, split_train=split_train, split_calibration=split_calibration,
                       split_from=split_from, set_level=set_level, sources=sources,
                       overall=group_figures(OVERALL, rows, class_index, group_names))


# ------------------------------------------------------------------------------------------------ printing


def _percent(value) -> str:
    return "   n/a" if value is None else f"{value:6.1%}"


def _mix_text(mix: dict | None) -> str:
    if mix is None:
        return "no verdict rule"
    return ", ".join(f"{v.value} {mix[v.value]:.1%}" for v in Verdict)


def format_field_report(report: FieldReport) -> str:
    """The printed table: one block per source, then all sources together."""
    lines = [f"photos from elsewhere: {report.labels}, part {report.part!r} ({report.images} photos; split train "
             f"{report.split_train:.0%} / calibration {report.split_calibration:.0%} / test, from the "
             f"{report.split_from})"]
    level = f" at {report.set_level:.0%}" if report.set_level is not None else ""
    for group in report.sources + (report.overall,):
        lines.append(f"  {group.name} ({group.images} photos, {group.answered} of known species)")
        if group.answered:
            size = "n/a" if group.mean_set_size is None else f"{group.mean_set_size:.2f}"
            lines.append(f"    top-1 {_percent(group.top1)}  top-5 {_percent(group.top5)}  sets{level} cover "
                         f"{_percent(group.coverage)}, mean size {size}")
            lines.append(f"    verdicts on known species: {_mix_text(group.verdicts)}")
            lines.append(f"    {format_answers(group.answers)}")
        if group.unknown_species:
            lines.append(f"    {group.unknown_species['images']} photos of unknown species: "
                         f"{_mix_text(group.unknown_species)}"
                         + (f"; named as a species {group.unknown_named:.1%}" if group.unknown_named is not None else ""))
        if group.not_a_flower:
            lines.append(f"    {group.not_a_flower['images']} non-flowers: {_mix_text(group.not_a_flower)}")
        if group.name != OVERALL:  # per species once per source; the overall block would repeat them
            lines += [_species_line(row) for row in group.species]
    return "\n".join(lines)


def _species_line(row: SpeciesFigures) -> str:
    head = f"      {row.class_name[:24]:24s} {row.kind:8s} n={row.images:<5d}"
    if row.kind in ANSWERED_KINDS:
        return f"{head} top-1 {_percent(row.top1)}  covered {_percent(row.coverage)}"
    return f"{head} {_mix_text(row.verdicts)}"
