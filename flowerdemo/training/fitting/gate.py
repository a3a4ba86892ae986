"""Fitting the "not a flower" / unknown-species rule (:class:`flowerdemo.core.verdict.FlowerGate`): thresholds with
a margin, the L2-regularised logistic regression and its out-of-fold scores. The exporter fits, the evaluator
measures; the app only applies the fitted rule (``core.verdict``)."""
from __future__ import annotations

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------ thresholds


def threshold_at_acceptance(in_distribution_scores: np.ndarray, accept: float = 0.95) -> float:
    """The lowest observed score at or below which at least ``accept`` of the in-distribution scores fall.

    An observed value, not an interpolated quantile: interpolation can land just below the needed
    order statistic and accept 94.9 % where 95 % was promised.
    """
    return float(np.quantile(np.asarray(in_distribution_scores, dtype=np.float64), accept, method="inverted_cdf"))


def threshold_with_widest_margin(flower_scores: np.ndarray, nonflower_scores: np.ndarray, accept: float = 0.95,
                                 reject: float = 0.90) -> float:
    """The threshold that clears both targets (accept ``accept`` of the flowers, reject ``reject`` of the
    non-flowers) by the widest equal margin, never one that accepts fewer than ``accept`` of the flowers.

    Why a margin on both sides: the flowers and non-flowers a threshold is fitted on are a few hundred photos
    each, and on new photos either rate drifts; a threshold sitting on one target's edge (the plain
    ``accept`` quantile) misses that target on new photos about half the time. When the non-flower target
    cannot be met, the result is the strictest threshold the flower guarantee allows.
    """
    flowers = np.sort(np.asarray(flower_scores, dtype=np.float64))
    others = np.sort(np.asarray(nonflower_scores, dtype=np.float64))
    flower_bound = threshold_at_acceptance(flowers, accept)
    candidates = np.unique(np.concatenate([flowers, others]))
    candidates = candidates[candidates >= flower_bound]
    accepted = np.searchsorted(flowers, candidates, side="right") / len(flowers)
    rejected = 1.0 - np.searchsorted(others, candidates, side="right") / len(others)
    smaller_margin = np.minimum(accepted - accept, rejected - reject)
    # The smaller margin rises then falls with the threshold, so its maximisers form one interval: take its middle.
    best = np.flatnonzero(smaller_margin >= smaller_margin.max() - 1e-12)  # float fractions: ties within rounding
    return float((candidates[best[0]] + candidates[best[-1]]) / 2)


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of out-of-distribution inputs accepted when ``tpr`` of in-distribution ones are accepted."""
    return float((np.asarray(out_scores) <= threshold_at_acceptance(in_scores, tpr)).mean())


# ------------------------------------------------------------------------------------------------ fitting


def fit_logistic(features: np.ndarray, is_positive: np.ndarray, l2: float, max_iter: int = 500) -> tuple[np.ndarray, float]:
    """(weights [D], bias) of an L2-regularised logistic regression, in the features' own units.

    Fitted on standardised features (so one ``l2`` suits every column), then folded back. Classes are weighted
    to equal total weight, so a few hundred non-flowers count as much as the flowers.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(is_positive, dtype=np.float64))
    if not (0 < float(y.sum()) < len(y)):
        raise ValueError("fitting the rule needs both flowers and non-flowers")
    mean, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / scale
    sample_weight = torch.where(y > 0, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = (w.detach() / scale).numpy()
    bias = float(b.detach() - (w.detach() * mean / scale).sum())
    return weights, bias


def stratified_folds(is_positive: np.ndarray, folds: int) -> np.ndarray:
    """Fold index per sample: each class dealt round-robin in its own order (deterministic, no seed)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    fold = np.empty(len(is_positive), dtype=np.int64)
    for value in (False, True):
        members = np.flatnonzero(is_positive == value)
        fold[members] = np.arange(len(members)) % folds
    return fold


def out_of_fold_scores(features: np.ndarray, is_positive: np.ndarray, l2: float, folds: int = 5) -> np.ndarray:
    """Each sample scored by a regression that did not see it: honest scores to set thresholds on."""
    features = np.asarray(features, dtype=np.float64)
    fold = stratified_folds(is_positive, folds)
    scores = np.empty(len(features))
    for f in range(folds):
        held = fold == f
        weights, bias = fit_logistic(features[~held], np.asarray(is_positive)[~held], l2)
        scores[held] = features[held] @ weights + bias
    return scores
