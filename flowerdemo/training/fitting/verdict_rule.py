"""Fitting the verdict rule (:class:`flowerdemo.core.verdict.FlowerGate`) on the calibration pool:

- "not a flower": a logistic regression on the ImageNet view's log-probabilities and the k-NN distance, val
  flowers against calibration non-flowers (:func:`fit_gate`);
- "a flower I don't know": known flowers against the field's unknown species (:func:`fit_unknown_rule`);
- "too small or blurry to tell": a sharpness level and a stricter "not a flower" threshold for such photos
  (:func:`fit_low_quality_rule`).

The statistics underneath (thresholds with a margin, the regression, out-of-fold scores) are in :mod:`.gate`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ...core.verdict import Verdict

from ...core.gate import FlowerGate, knn_distance, log_softmax_np
from ..engine import Outputs
from ..errors import ExportError
from ...core.decision import calibrated_probabilities
from ..metrics import roc_auc
from .gate import fit_logistic, out_of_fold_scores, threshold_at_acceptance, threshold_with_widest_margin
from .pool import CalibrationPool

L2_CANDIDATES = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class GateTargets:
    accept: float = 0.98  # the "not a flower" threshold accepts at least this share of val flowers
    reject: float = 0.99  # ... and aims to reject this share of the calibration non-flowers
    knn_accept: float = 0.95  # k-NN alone (what a plant-like photo answers to): the flower guarantee
    knn_reject: float = 0.90  # ... and its non-flower target
    unknown_accept: float = 0.99  # known val flowers within the "unknown species" distance
    knn_k: int = 5
    unknown_species_accept: float = 0.95  # with photos from elsewhere: known flowers kept by the unknown rule
    low_quality_accept: float = 0.995  # small/soft calibration flowers the stricter "not a flower" rule keeps
    low_quality_fraction: float = 0.5  # "too small": sharpness under this share of val's 1st percentile


def gate_features(outputs: Outputs, bank: torch.Tensor, k: int) -> np.ndarray:
    """[N, 1001]: the ImageNet view's log-probabilities, then the k-NN distance (the combined rule's inputs)."""
    return np.concatenate([log_softmax_np(outputs.imagenet_logits), knn_distance(outputs.embeddings, bank, k)[:, None]],
                          axis=1)


def fit_gate(val: Outputs, nonflowers: Outputs, bank: torch.Tensor, plant_like: tuple,
             targets: GateTargets) -> tuple[FlowerGate, dict]:
    """The verdict rule and a report of how it was chosen, from val flowers against calibration non-flowers.

    The regression's strength (L2) is chosen by out-of-fold AUROC, and the "not a flower" threshold on
    out-of-fold scores too: in-sample scores of a 1,001-feature regression would make the margin look wider
    than it will be on new photos.
    """
    features = np.concatenate([gate_features(val, bank, targets.knn_k), gate_features(nonflowers, bank, targets.knn_k)])
    is_nonflower = np.r_[np.zeros(len(val)), np.ones(len(nonflowers))]
    folds = int(min(5, len(val), len(nonflowers)))
    if folds < 2:
        raise ExportError("fitting the verdict rule needs at least 2 val flowers and 2 calibration non-flowers")
    candidates = {}
    for l2 in L2_CANDIDATES:
        scores = out_of_fold_scores(features, is_nonflower, l2, folds)
        candidates[l2] = (roc_auc(scores[is_nonflower == 1], scores[is_nonflower == 0]), scores)
    best_l2 = max(L2_CANDIDATES, key=lambda l2: (round(candidates[l2][0], 6), l2))  # ties: the stronger prior
    oof = candidates[best_l2][1]
    weights, bias = fit_logistic(features, is_nonflower, best_l2)
    flowers, others = is_nonflower == 0, is_nonflower == 1
    reject_threshold = threshold_with_widest_margin(oof[flowers], oof[others], targets.accept, targets.reject)
    knn = features[:, -1]
    knn_reject = threshold_with_widest_margin(knn[flowers], knn[others], targets.knn_accept, targets.knn_reject)
    gate = FlowerGate(knn_k=targets.knn_k, imagenet_weights=tuple(weights[:-1]), knn_weight=float(weights[-1]),
                      bias=bias, reject_threshold=reject_threshold, knn_reject_threshold=knn_reject,
                      unknown_threshold=threshold_at_acceptance(knn[flowers], targets.unknown_accept),
                      plant_like=plant_like)
    report = {
        "l2": best_l2, "folds": folds, "val_flowers": int(flowers.sum()), "nonflowers": int(others.sum()),
        "l2_candidates_oof_auroc": {str(l2): candidates[l2][0] for l2 in L2_CANDIDATES},
        "oof_auroc": {"knn": roc_auc(knn[others], knn[flowers]), "combined": candidates[best_l2][0]},
        "targets": {"accept": targets.accept, "reject": targets.reject, "knn_accept": targets.knn_accept,
                    "knn_reject": targets.knn_reject, "unknown_accept": targets.unknown_accept},
        "oof_val_flowers_rejected": float((oof[flowers] > reject_threshold).mean()),
        "oof_nonflowers_rejected": float((oof[others] > reject_threshold).mean()),
    }
    return gate, report


def fit_unknown_rule(pool: CalibrationPool, bank: torch.Tensor, temperature: float, gate: FlowerGate,
                     targets: GateTargets) -> tuple[FlowerGate, dict]:
    """"A flower I don't know" from known flowers (val and the field's) against the field's unknown species:
    a logistic regression on the k-NN distance and the surprise of the top class (-log p), its threshold
    keeping ``unknown_species_accept`` of the known flowers (on out-of-fold scores)."""
    known_field, unknown_field = pool.known_field(), pool.unknown_field()
    if not unknown_field.any():
        return gate, {"fitted_on": "val k-NN distance only (no unknown species among the photos from elsewhere)"}

    def features(outputs: Outputs, rows) -> np.ndarray:
        knn = knn_distance(outputs.embeddings[rows], bank, gate.knn_k)
        top = calibrated_probabilities(outputs.logits[rows], temperature).max(axis=1)
        return np.stack([knn, -np.log(np.clip(top, 1e-12, 1.0))], axis=1)

    every = np.ones(len(pool.val), dtype=bool)
    known = np.concatenate([features(pool.val, every), features(pool.field, known_field)])
    unknown = features(pool.field, unknown_field)
    x = np.concatenate([known, unknown])
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    oof = out_of_fold_scores(x, y, l2=0.01, folds=5)
    weights, bias = fit_logistic(x, y, l2=0.01)
    # Both collections must keep their share: val's photos sit farther from the bank than the field's (whose
    # look-alikes fill the bank), so one threshold over the mix let 9 % of val's flowers, and 14 % of the test
    # split's, be called unknown in the first export of this pool.
    val_oof, field_oof = oof[:len(pool.val)], oof[len(pool.val):len(known)]
    threshold = max(threshold_at_acceptance(val_oof, targets.unknown_accept),
                    threshold_at_acceptance(field_oof, targets.unknown_species_accept) if len(field_oof) else -np.inf)
    fitted = replace(gate, unknown_weights=(float(weights[0]), float(weights[1])), unknown_bias=float(bias),
                     unknown_threshold=threshold)
    report = {"known_flowers": int(len(known)), Verdict.UNKNOWN_SPECIES.value: int(len(unknown)),
              "weights": {"knn": float(weights[0]), "surprise": float(weights[1])},
              "oof_auroc": roc_auc(oof[y == 1], oof[y == 0]),
              "oof_known_called_unknown": float((oof[y == 0] > threshold).mean()),
              "oof_val_called_unknown": float((val_oof > threshold).mean()),
              "oof_unknown_called_unknown": float((oof[y == 1] > threshold).mean())}
    return fitted, report


def fit_low_quality_rule(pool: CalibrationPool, gate: FlowerGate, bank: torch.Tensor, temperature: float,
                         targets: GateTargets) -> tuple[FlowerGate, dict]:
    """"Too small or blurry to tell well": a sharpness under ``low_quality_fraction`` of the val photos' 1st
    percentile; such a photo is "not a flower" only past the log-odds that ``low_quality_accept`` of the small
    calibration flowers stay under (so smallness alone never makes a flower "not a flower")."""
    level = low_quality_level(pool.val, targets)
    flowers = pool.flowers()
    scores = gate.scores(flowers.imagenet_logits, flowers.embeddings, bank, calibrated_probabilities(flowers.logits, temperature))
    small = flowers.sharpness < level
    report = {"sharpness_threshold": level, "small_calibration_flowers": int(small.sum()),
              "val_photos_small": float((pool.val.sharpness < level).mean())}
    strict = gate.reject_threshold
    if small.sum() >= 20:
        strict = max(strict, threshold_at_acceptance(scores.combined[small], targets.low_quality_accept))
    report["reject_threshold"] = strict
    return replace(gate, low_quality_sharpness=level, low_quality_reject_threshold=strict), report


def low_quality_level(val: Outputs, targets: GateTargets) -> float:
    """The sharpness under which a photo is too small or soft to judge well: a share of val's 1st percentile."""
    return float(np.percentile(val.sharpness, 1)) * targets.low_quality_fraction
