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


def threshold_for_targets(flower_scores: np.ndarray, nonflower_scores: np.ndarray, accept: float = 0.95,
                          reject: float = 0.95) -> float:
    """The most lenient threshold that still rejects ``reject`` of the non-flowers, but never one that accepts
    fewer than ``accept`` of the flowers (the flower guarantee wins when both cannot hold).

    Why not simply the ``accept`` quantile of flowers: a photo of a real flower the app calls "not a flower"
    is the more annoying error, and at 95 % the k-NN score left rejection headroom on the non-flowers unused.
    """
    flower_bound = threshold_at_acceptance(flower_scores, accept)
    nonflower_bound = float(np.quantile(np.asarray(nonflower_scores, dtype=np.float64), 1.0 - reject))
    return max(flower_bound, nonflower_bound)


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of out-of-distribution inputs accepted when ``tpr`` of in-distribution ones are accepted."""
    return float((np.asarray(out_scores) <= threshold_at_acceptance(in_scores, tpr)).mean())
