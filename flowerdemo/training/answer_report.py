"""How the ranked answers did on photos with known right answers: the share answered at each rank, how often each
rank's answers were right, the share of wrong answers, and the prediction sets per photo group.

An answer is wrong when the taxon it names holds none of the photo's accepted classes; "no answer" (not sure, or
not a flower) is never wrong, only unhelpful. For photos of species the model does not know, what matters is how
often one is *named as a species* (always wrong).
"""
from __future__ import annotations

from typing import Sequence

from ..core.ranks import RANKS, Rank

NONE = "none"  # the key of "no rank was sure enough" (or not a flower)


def answer_figures(accepted: Sequence[tuple], answers: Sequence, sets: Sequence | None = None,
                   groups: Sequence[int] | None = None, group_names: Sequence[str] = ()) -> dict | None:
    """Figures for photos of known species: ``accepted`` class indices per photo, their
    :class:`~flowerdemo.core.ranks.Answer` (None where the model gives none), prediction sets and groups."""
    if not answers or any(answer is None for answer in answers):
        return None
    count = len(answers)
    ranks = [answer.rank for answer in answers]
    right = [answer.rank is not None and bool(set(answer.classes) & set(classes))
             for answer, classes in zip(answers, accepted)]
    figures = {"images": count, "wrong": sum(r is not None and not ok for r, ok in zip(ranks, right)) / count}
    for rank in RANKS:
        at_rank = [ok for r, ok in zip(ranks, right) if r is rank]
        figures[rank.value] = len(at_rank) / count
        figures[f"{rank.value}_right"] = sum(at_rank) / len(at_rank) if at_rank else None
    figures[NONE] = sum(r is None for r in ranks) / count
    if sets is not None and groups is not None and all(s is not None for s in sets):
        figures["sets_by_group"] = sets_by_group(accepted, sets, groups, group_names)
    return figures


def named_as_species(answers: Sequence) -> float | None:
    """Share of photos (of species the model does not know) answered with a species: each one wrong."""
    if not answers or any(answer is None for answer in answers):
        return None
    return sum(answer.rank is Rank.SPECIES for answer in answers) / len(answers)


def sets_by_group(accepted: Sequence[tuple], sets: Sequence, groups: Sequence[int], names: Sequence[str]) -> dict:
    """{group name: coverage, mean size, images} of the prediction sets, for each photo group that has photos."""
    out = {}
    for group in sorted(set(int(g) for g in groups)):
        rows = [i for i, g in enumerate(groups) if int(g) == group]
        covered = [bool(set(int(c) for c in sets[i]) & set(accepted[i])) for i in rows]
        name = names[group] if group < len(names) else f"group {group}"
        out[name] = {"images": len(rows), "coverage": sum(covered) / len(rows),
                     "mean_size": sum(len(sets[i]) for i in rows) / len(rows)}
    return out


def format_answers(figures: dict | None) -> str:
    """One line: "species 61.0% (right 93.1%), genus ..., none 20.0%; wrong 5.2%"."""
    if not figures:
        return "answers: n/a (the model has no rank rule)"
    parts = []
    for rank in RANKS:
        right = figures.get(f"{rank.value}_right")
        parts.append(f"{rank.value} {figures[rank.value]:.1%}" + (f" (right {right:.1%})" if right is not None else ""))
    return f"answers: {', '.join(parts)}, {NONE} {figures[NONE]:.1%}; wrong {figures['wrong']:.1%}"
