"""Fitting and measuring the conformal prediction sets (:class:`flowerdemo.core.conformal.ConformalSets`): split
conformal calibration, the RAPS penalty chosen on random halves, coverage and size. The app only applies the
fitted rule (``core.conformal``)."""
from __future__ import annotations

import math

import numpy as np

from ...core.conformal import ConformalSets, ranked_scores
from ...core.decision import calibrated_probabilities


def true_class_scores(probabilities: np.ndarray, labels: np.ndarray, penalty: float = 0.0, k_reg: int = 1,
                      method: str = "raps") -> np.ndarray:
    """The score of each row's true class: what calibration ranks."""
    order, scores = ranked_scores(probabilities, penalty, k_reg, method)
    rank_of_true = np.argmax(order == np.asarray(labels)[:, None], axis=1)
    return scores[np.arange(len(scores)), rank_of_true]


def fit_conformal(probabilities: np.ndarray, labels: np.ndarray, level: float = 0.95, penalty: float = 0.0,
                  k_reg: int = 1, method: str = "raps") -> ConformalSets:
    """Split conformal calibration on photos the model never trained on (their calibrated probabilities)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    probabilities = np.asarray(probabilities)
    scores = true_class_scores(probabilities, labels, penalty, k_reg, method)
    return ConformalSets(level=float(level), qhat=conformal_qhat(scores, level, penalty, probabilities.shape[1]),
                         penalty=float(penalty), k_reg=int(k_reg), calibration_images=len(scores), method=method)


def conformal_qhat(true_scores: np.ndarray, level: float, penalty: float, classes: int) -> float:
    """The ceil((n + 1) * level)-th smallest of the calibration photos' true-class scores. Too few photos to
    promise the level: the textbook qhat is infinite, i.e. every class (the only honest set)."""
    scores = np.sort(np.asarray(true_scores, dtype=np.float64))
    rank = math.ceil((len(scores) + 1) * level)
    return float(scores[rank - 1]) if rank <= len(scores) else 1.0 + penalty * classes + 1.0


def coverage_and_size(rule: ConformalSets, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """What the evaluator reports: the share of sets holding the true class, and the set sizes."""
    return set_figures(rule.sets(probabilities), labels, rule.level)


def set_figures(sets, labels, level: float) -> dict:
    """Coverage and size of given prediction sets (each photo's own, e.g. with its group's threshold)."""
    sizes = np.array([len(s) for s in sets])
    covered = np.array([int(label) in set(int(c) for c in s) for s, label in zip(sets, np.asarray(labels))])
    return {"level": level, "coverage": float(covered.mean()), "mean_size": float(sizes.mean()),
            "singletons": float((sizes == 1).mean()), "max_size": int(sizes.max()), "images": int(len(sizes))}


PENALTY_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def select_penalty(probabilities: np.ndarray, labels: np.ndarray, level: float = 0.95, margin: float = 0.01,
                   grid=PENALTY_GRID, k_reg: int = 1, halves: int = 200, seed: int = 0) -> tuple[float, dict]:
    """The RAPS penalty with the smallest sets whose worst coverage over ``halves`` random half splits of the
    calibration photos (fit on one half, measure on the other) stays at or above ``level + margin``.

    Why a margin: the calibration photos are the val half that chose the checkpoint, so the model looks better
    there than on new photos; a penalty that only just covers there under-covers elsewhere. When no penalty
    qualifies, the one with the best worst-case coverage. Returns (penalty, a report row per candidate).
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(len(labels)) for _ in range(halves)]
    report = {}
    for penalty in grid:
        coverage, size = [], []
        for order in splits:
            fit, held = order[: len(order) // 2], order[len(order) // 2:]
            row = coverage_and_size(fit_conformal(probabilities[fit], labels[fit], level, penalty, k_reg),
                                    probabilities[held], labels[held])
            coverage.append(row["coverage"])
            size.append(row["mean_size"])
        report[penalty] = {"worst_coverage": float(np.min(coverage)), "mean_coverage": float(np.mean(coverage)),
                           "mean_size": float(np.mean(size))}
    qualified = [p for p in grid if report[p]["worst_coverage"] >= level + margin]
    if qualified:
        return min(qualified, key=lambda p: (report[p]["mean_size"], p)), report
    return max(grid, key=lambda p: (report[p]["worst_coverage"], -report[p]["mean_size"])), report


def fit_prediction_sets(logits: np.ndarray, labels: np.ndarray, temperature: float, level: float,
                        penalty: float | None, k_reg: int, method: str = "raps") -> tuple[ConformalSets, dict]:
    """Conformal sets on the calibrated probabilities of photos never trained on; for RAPS, the penalty chosen on
    those photos too (:func:`select_penalty`) unless given. Returns (the rule, a report of the penalty's choice)."""
    probabilities = calibrated_probabilities(logits, temperature)
    report = {}
    if method == "lac":
        return fit_conformal(probabilities, labels, level, 0.0, k_reg, method), report
    if penalty is None:
        penalty, candidates = select_penalty(probabilities, labels, level, k_reg=k_reg)
        report = {"penalty_candidates": {str(p): row for p, row in candidates.items()}}
    return fit_conformal(probabilities, labels, level, penalty, k_reg), report
