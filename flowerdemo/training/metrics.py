"""Pure metric functions on logits/labels (numpy in, numbers out)."""
from __future__ import annotations

import numpy as np

from ..core.decision import calibrated_probabilities


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    return float((topk == np.asarray(labels)[:, None]).any(axis=1).mean())


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    true_positive = np.diag(matrix).astype(np.float64)
    precision_denominator = matrix.sum(axis=0)
    recall_denominator = matrix.sum(axis=1)
    precision = np.divide(true_positive, precision_denominator, out=np.zeros_like(true_positive), where=precision_denominator > 0)
    recall = np.divide(true_positive, recall_denominator, out=np.zeros_like(true_positive), where=recall_denominator > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the labels (absent classes would count as 0 otherwise)."""
    present = matrix.sum(axis=1) > 0
    return float(per_class_f1(matrix)[present].mean())


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    support = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), support, out=np.full(len(matrix), np.nan), where=support > 0)


def most_confused_pairs(matrix: np.ndarray, top: int = 10) -> list[tuple[int, int, int]]:
    """(true, predicted, count) for the largest off-diagonal cells, largest first."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:top]
    pairs = [(int(i), int(j), int(off_diagonal[i, j])) for i, j in zip(*np.unravel_index(order, matrix.shape))]
    return [pair for pair in pairs if pair[2] > 0]


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probabilities = calibrated_probabilities(logits, temperature)
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15):
    """Per equal-width confidence bin: (count, mean confidence, accuracy)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    mean_confidence = np.divide(np.bincount(index, confidence, num_bins), counts, out=np.zeros(num_bins), where=counts > 0)
    accuracy = np.divide(np.bincount(index, correct.astype(float), num_bins), counts, out=np.zeros(num_bins), where=counts > 0)
    return counts, mean_confidence, accuracy


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    counts, mean_confidence, accuracy = reliability_bins(probabilities, labels, num_bins)
    return float((counts / counts.sum() * np.abs(mean_confidence - accuracy)).sum())


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U)."""
    positive = np.asarray(positive_scores, dtype=np.float64)
    negative = np.asarray(negative_scores, dtype=np.float64)
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    unique, first_index, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first_index + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    rank_sum = ranks[: len(positive)].sum()
    return float((rank_sum - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))
