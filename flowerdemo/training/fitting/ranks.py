"""Fitting the group-conditional rules of :mod:`flowerdemo.core.ranks` on photos never trained on: the photo
groups, the rank thresholds, the prediction sets per group (Mondrian conformal) and the unknown-species
threshold per group.

Every photo of the calibration pool comes with ``accepted``: the class indices that count as a right answer
(one for a photo of a known species, several for a loose, genus-level label, none for an unknown species).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...core.conformal import ConformalSets
from ...core.decision import calibrated_probabilities
from ...core.ranks import RANKS, PhotoGroups, Rank, RankRule, RollUp, shift_features
from ...core.taxonomy import Taxonomy
from ...core.gate import FlowerGate, knn_distance
from .conformal import conformal_qhat
from .gate import fit_logistic, out_of_fold_scores, threshold_at_acceptance
from .pool import CalibrationPool

GROUP_NAMES = ("like the training photos", "in between", "unlike the training photos")


@dataclass(frozen=True)
class Pool:
    """The calibration pool's raw material, one row per photo."""

    probabilities: np.ndarray  # [N, K] calibrated
    embeddings: np.ndarray  # [N, C]
    knn: np.ndarray  # [N]
    sharpness: np.ndarray  # [N]
    accepted: tuple  # per photo, a tuple of accepted class indices (empty: an unknown species)
    shifted: np.ndarray  # [N] bool: the photo is not from the training collection

    def __len__(self) -> int:
        return len(self.knn)


def fit_photo_groups(pool: Pool, groups: int = 3, l2: float = 1.0, keep_in_first: float = 0.95,
                     min_per_group: int = 100) -> tuple[PhotoGroups, np.ndarray]:
    """(the grouping, each pool photo's group from out-of-fold scores). A logistic regression tells the
    training collection's held-out photos from photos taken elsewhere. The first edge keeps ``keep_in_first`` of
    the training collection's photos in group 0 (so they keep its small sets and species answers); the shifted
    photos above it are cut into equal shares for the other groups (fewer groups where a share would hold under
    ``min_per_group`` photos)."""
    features = shift_features(pool.embeddings, pool.knn, pool.sharpness)
    shifted = np.asarray(pool.shifted, dtype=bool)
    honest = out_of_fold_scores(features, shifted, l2)
    weights, bias = fit_logistic(features, shifted, l2)
    first = float(np.quantile(honest[~shifted], keep_in_first, method="inverted_cdf"))
    beyond = honest[honest > first]
    groups = max(1, min(groups, 1 + len(beyond) // max(1, min_per_group)))
    edges = (first,) + tuple(float(np.quantile(beyond, q)) for q in np.arange(1, groups - 1) / (groups - 1)) if groups > 1 else ()
    names = GROUP_NAMES if groups == len(GROUP_NAMES) else tuple(f"group {i}" for i in range(groups))
    grouping = PhotoGroups(weights=tuple(weights), bias=bias, edges=edges, names=names)
    return grouping, grouping.assign(honest)


def is_right(roll_up: RollUp, rank: Rank, taxon_index: np.ndarray, accepted: tuple) -> np.ndarray:
    """[N] bool: the taxon named at ``rank`` holds one of the photo's accepted classes."""
    return np.asarray([bool(set(roll_up.members(rank, int(t)).tolist()) & set(a)) for t, a in zip(taxon_index, accepted)])


def lowest_threshold_at_accuracy(probability: np.ndarray, right: np.ndarray, accuracy: float,
                                 min_answers: int = 10, local_accuracy: float | None = None) -> float:
    """The lowest probability threshold whose answers (probability >= threshold) are right at least
    ``accuracy`` of the time, judged by a one-sided Wilson lower bound (so that a handful of lucky answers
    does not open a rank); with ``local_accuracy``, also the answers *at* the threshold must be right that often
    (their rate from an isotonic fit of right-or-wrong on probability), so that a rank does not open down to
    probabilities where most answers are wrong because the sure answers above carry the average. Above 1 (never)
    when no threshold qualifies."""
    order = np.argsort(-probability, kind="stable")
    p, r = probability[order], right[order].astype(float)
    answered = np.arange(1, len(p) + 1)
    lower = wilson_lower(np.cumsum(r), answered)
    ok = (lower >= accuracy) & (answered >= min_answers)
    if local_accuracy is not None:
        ok &= decreasing_fit(r) >= local_accuracy
    # only where the next photo has a lower probability: a threshold between ties would be dishonest
    ok &= np.append(p[1:] < p[:-1], True)
    if not ok.any():
        return 1.01
    return float(p[np.flatnonzero(ok)[-1]])


def decreasing_fit(values: np.ndarray) -> np.ndarray:
    """The non-increasing sequence closest to ``values`` in squared error (pool adjacent violators): here, how
    often an answer is right as its probability falls, without the noise of single photos."""
    blocks: list[list[float]] = []  # [sum, count] per block, each block's mean below the previous one's
    for value in np.asarray(values, dtype=float):
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(count), total / count) for total, count in blocks]) if blocks else np.zeros(0)


def wilson_lower(successes: np.ndarray, trials: np.ndarray, z: float = 1.0) -> np.ndarray:
    """One-sided Wilson score lower bound (z = 1: ~84 % confidence), elementwise."""
    n = np.maximum(trials, 1).astype(float)
    phat = successes / n
    centre = phat + z * z / (2 * n)
    spread = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def fit_rank_rule(probabilities: np.ndarray, accepted: tuple, groups: np.ndarray, roll_up: RollUp,
                  accuracy=(0.95, 0.9, 0.9), group_count: int | None = None, local_accuracy=None) -> RankRule:
    """Per group, walking species -> genus -> family: the lowest threshold whose answers are right at least
    ``accuracy`` of the time among the photos the deeper ranks left unanswered (and, with ``local_accuracy``,
    whose answers at the threshold are right that often). Photos without an accepted class (unknown species)
    are left out: the unknown-species verdict is theirs."""
    known = np.asarray([len(a) > 0 for a in accepted])
    group_count = group_count or int(groups.max()) + 1
    thresholds = []
    for group in range(group_count):
        rows = np.flatnonzero(known & (groups == group))
        open_rows = np.ones(len(rows), dtype=bool)
        row_thresholds = []
        for depth, rank in enumerate(RANKS):
            best, probability = roll_up.top(probabilities[rows], rank)
            right = is_right(roll_up, rank, best, tuple(accepted[i] for i in rows))
            local = None if local_accuracy is None else local_accuracy[depth]
            threshold = lowest_threshold_at_accuracy(probability[open_rows], right[open_rows], accuracy[depth],
                                                     local_accuracy=local)
            row_thresholds.append(threshold)
            open_rows &= probability < threshold
        thresholds.append(tuple(row_thresholds))
    return RankRule(thresholds=tuple(thresholds), accuracy=tuple(accuracy), calibration_images=int(known.sum()))


def fit_group_sets(base: ConformalSets, probabilities: np.ndarray, accepted: tuple, groups: np.ndarray,
                   group_count: int) -> ConformalSets:
    """The base rule's score (LAC or RAPS), one conformal threshold per group (Mondrian conformal prediction: coverage holds
    within each group, not only on average). A photo with several accepted classes is covered by any."""
    scores = true_scores(probabilities, accepted, base)
    known = np.asarray([len(a) > 0 for a in accepted])
    by_group = [conformal_qhat(scores[known & (groups == group)], base.level, base.penalty, probabilities.shape[1])
                for group in range(group_count)]
    return replace(base, calibration_images=int(known.sum()), qhat_by_group=tuple(by_group))


def true_scores(probabilities: np.ndarray, accepted: tuple, rule: ConformalSets) -> np.ndarray:
    """[N] the rule's score of the best-ranked accepted class (inf for photos with none)."""
    order, scores = rule.ranked_scores(probabilities)
    out = np.full(len(probabilities), np.inf)
    for row, classes in enumerate(accepted):
        if classes:
            positions = np.flatnonzero(np.isin(order[row], list(classes)))
            out[row] = scores[row, positions[0]]
    return out


def fit_unknown_thresholds(unknown_scores: np.ndarray, is_unknown: np.ndarray, groups: np.ndarray,
                           group_count: int, known_called_unknown: tuple) -> tuple:
    """Per group, the threshold above which a photo is "a flower I don't know": the lowest that calls at most
    ``known_called_unknown[group]`` of that group's known flowers unknown (an observed score, not interpolated)."""
    thresholds = []
    for group in range(group_count):
        known = unknown_scores[(groups == group) & ~is_unknown]
        thresholds.append(threshold_at_acceptance(known, 1.0 - known_called_unknown[group]) if len(known) else float("inf"))
    return tuple(thresholds)


@dataclass(frozen=True)
class RuleTargets:
    """What the group-conditional rules are fitted to (part of the export, not of the training recipe)."""

    groups: int = 3
    keep_in_first: float = 0.95  # of the training collection's held-out photos, in group 0
    accuracy: tuple = (0.9, 0.9, 0.9)  # answers at species, genus, family rank are right this often
    # ... and the answers at each rank's threshold (the least sure ones it gives) are right this often
    local_accuracy: tuple = (0.75, 0.75, 0.75)
    # per group: the most known flowers called "a flower I don't know" (the exporter passes its verdict targets)
    known_called_unknown: tuple = (0.01, 0.05, 0.05)


def pool_from_calibration(calibration: CalibrationPool, bank, temperature: float, gate: FlowerGate) -> tuple[Pool, np.ndarray]:
    """(the rules' pool, each photo's unknown-species score) from the exporter's calibration pool: val photos
    (the training collection, never trained on) and the field's calibration share (shifted)."""
    parts = [calibration.val] + ([calibration.field] if calibration.has_field else [])
    logits = np.concatenate([p.logits for p in parts])
    embeddings = np.concatenate([p.embeddings for p in parts])
    probabilities = calibrated_probabilities(logits, temperature)
    knn = knn_distance(embeddings, bank, gate.knn_k)
    accepted = tuple((int(label),) for label in calibration.val.labels) + tuple(calibration.field_accept)
    shifted = np.concatenate([np.zeros(len(calibration.val), bool)]
                             + ([np.ones(len(calibration.field), bool)] if calibration.has_field else []))
    pool = Pool(probabilities, embeddings, knn, np.concatenate([p.sharpness for p in parts]), accepted, shifted)
    return pool, gate.unknown_scores(knn, probabilities)


def fit_conditional_rules(calibration: CalibrationPool, bank, temperature: float, gate: FlowerGate,
                          sets: ConformalSets, taxonomy: Taxonomy, targets: RuleTargets = RuleTargets()) -> tuple:
    """(photo groups, rank rule, prediction sets with a threshold per group, verdict rule with an unknown-species
    threshold per group, report), all fitted on the calibration pool. Without photos from elsewhere there is
    nothing to tell groups apart by: one group, and only the rank rule is fitted."""
    pool, unknown_scores = pool_from_calibration(calibration, bank, temperature, gate)
    if pool.shifted.any():
        grouping, groups = fit_photo_groups(pool, targets.groups, keep_in_first=targets.keep_in_first)
    else:
        grouping, groups = None, np.zeros(len(pool), dtype=int)
    count = grouping.count if grouping is not None else 1
    ranks = fit_rank_rule(pool.probabilities, pool.accepted, groups, RollUp(taxonomy), targets.accuracy, count,
                          targets.local_accuracy)
    if grouping is not None:
        sets = fit_group_sets(sets, pool.probabilities, pool.accepted, groups, count)
        caps = tuple(targets.known_called_unknown[min(g, len(targets.known_called_unknown) - 1)] for g in range(count))
        gate = replace(gate, unknown_threshold_by_group=fit_unknown_thresholds(
            unknown_scores, np.asarray([not a for a in pool.accepted]), groups, count, caps))
    report = {"groups": [{"name": (grouping.names[g] if grouping else "all"), "photos": int((groups == g).sum()),
                          "shifted": int(((groups == g) & pool.shifted).sum()),
                          "rank_thresholds": list(ranks.thresholds[g])} for g in range(count)],
              "accuracy_targets": list(targets.accuracy), "local_accuracy_targets": list(targets.local_accuracy),
              "known_called_unknown_caps": list(targets.known_called_unknown)}
    return grouping, ranks, sets, gate, report
