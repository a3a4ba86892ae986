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


def pooled_embedding(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] feature map -> [B, C]: the same global average pool the classifier head applies."""
    return feature_map.float().mean(dim=(2, 3))


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embeddings.float(), dim=1)


def threshold_at_acceptance(in_distribution_scores: np.ndarray, accept: float = 0.95) -> float:
    """The score below which ``accept`` of the in-distribution (flower) scores fall."""
    return float(np.quantile(np.asarray(in_distribution_scores, dtype=np.float64), accept))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of out-of-distribution inputs accepted when ``tpr`` of in-distribution ones are accepted."""
    return float((np.asarray(out_scores) <= threshold_at_acceptance(in_scores, tpr)).mean())
