"""Out-of-distribution ("not a flower") scores. Every score is *higher = less flower-like*."""
from __future__ import annotations

import numpy as np
import torch

OOD_SCORES = ("energy", "max_logit", "max_prob", "knn_cosine")


def ood_scores(score: str, logits: torch.Tensor, embeddings: torch.Tensor, temperature: float = 1.0,
               bank: torch.Tensor | None = None, k: int = 10) -> torch.Tensor:
    """Scores [B] for logits [B, N] and pooled embeddings [B, C]. ``bank`` is [M, C], L2-normalised."""
    scaled = logits.float() / temperature
    if score == "energy":
        return -temperature * torch.logsumexp(scaled, dim=1)
    if score == "max_logit":
        return -scaled.max(dim=1).values
    if score == "max_prob":
        return -scaled.softmax(dim=1).max(dim=1).values
    if score == "knn_cosine":
        if bank is None or bank.numel() == 0:
            raise ValueError("the knn_cosine score needs the model's feature bank, and this model has none")
        similarity = normalize(embeddings) @ bank.float().T
        k = max(1, min(k, bank.shape[0]))
        # Distance to the k-th nearest training image (Sun et al. 2022, "OOD detection with deep nearest neighbors").
        return 1.0 - similarity.topk(k, dim=1).values[:, -1]
    raise ValueError(f"score must be one of {', '.join(OOD_SCORES)}; got {score!r}")


def ood_scores_np(score: str, logits: np.ndarray, embeddings: np.ndarray, temperature: float = 1.0,
                  bank: torch.Tensor | None = None, k: int = 10) -> np.ndarray:
    """``ood_scores`` for the numpy arrays that the exporter and the evaluator collect."""
    return ood_scores(score, torch.from_numpy(logits), torch.from_numpy(embeddings), temperature, bank, k).numpy()


def pooled_embedding(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] feature map -> [B, C]: the same global average pool the classifier head applies."""
    return feature_map.float().mean(dim=(2, 3))


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embeddings.float(), dim=1)


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
