"""The verdict on a photo: one of the known species, a flower of a species the model does not know, or not a
flower at all. :class:`FlowerGate` owns the scores, their direction and the thresholds; the exporter fits it,
the predictor and the evaluator call it. Every score here is *higher = less like a known flower*.

Two views of a photo go into it:

- **k-NN** (flower-feature space): the cosine distance from the photo's pooled embedding to its k-th nearest
  training image (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"). Far from every
  known species means "unknown species" or "not a flower"; on its own it cannot tell which, because the
  fine-tuned network only knows flowers.
- **ImageNet view**: the log-probabilities of the original, frozen ImageNet network, which tells a beagle, a
  horse, a face and a toaster apart.

The "not a flower" score is a logistic regression on both (``w . log p_imagenet + w_knn * knn + b``, the
log-odds of "not a flower"), fitted on val flowers against calibration non-flowers. Photos that ImageNet files
under a plant-like class (a daisy, a pot, a vase, a bee) are never rejected on the ImageNet view's word alone:
the k-NN view must also find them far from every known flower.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .verdict import Verdict



# The Laplacian whose mean magnitude on the model's input measures how much fine detail a photo has: a thumbnail
# or a soft phone crop blown up to the input size has little (training/augment.py makes such photos to train on).
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)

# ImageNet synsets whose photos are often of flowers or other plants, or of things that go with blooms
# (a pot, a vase, a bee or butterfly on a flower). WordNet ids, so the list does not depend on class order.
PLANT_LIKE_WNIDS = (
    "n11939491",  # daisy
    "n12057211",  # yellow lady's slipper
    "n11879895",  # rapeseed
    "n12144580",  # corn
    "n12267677",  # acorn
    "n12620546",  # hip, rose hip
    "n12768682",  # buckeye
    "n13133613",  # ear, spike, capitulum
    "n12985857", "n12998815", "n13037406", "n13040303", "n13044778", "n13052670", "n13054560",  # fungi
    "n07734744",  # mushroom
    "n07730033",  # cardoon
    "n07718747",  # artichoke
    "n07714571", "n07714990", "n07715103",  # cabbage, broccoli, cauliflower
    "n07745940", "n07753113", "n07753275", "n07768694",  # strawberry, fig, pineapple, pomegranate
    "n03991062",  # pot, flowerpot
    "n04522168",  # vase
    "n03457902",  # greenhouse
    "n02206856",  # bee
    "n02276258", "n02277742", "n02279972", "n02280649", "n02281406", "n02281787",  # butterflies
    "n01833805",  # hummingbird
    "n01914609",  # sea anemone
)


class GateConfigError(ValueError):
    """A verdict rule (usually from an artifact's metadata) is malformed."""


# ------------------------------------------------------------------------------------------------ the two views


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embeddings.float(), dim=1)


def pooled_embedding(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] feature map -> [B, C]: the same global average pool the classifier head applies."""
    return feature_map.float().mean(dim=(2, 3))


def knn_distance(embeddings, bank: torch.Tensor, k: int) -> np.ndarray:
    """[B] cosine distance from each embedding [B, C] to its k-th nearest row of ``bank`` [M, C] (L2-normalised)."""
    if bank is None or bank.numel() == 0:
        raise ValueError("the k-NN score needs the model's feature bank, and this model has none")
    embeddings = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    similarity = normalize(embeddings) @ bank.float().T
    k = max(1, min(k, bank.shape[0]))
    return (1.0 - similarity.topk(k, dim=1).values[:, -1]).double().numpy()


def sharpness(batch: torch.Tensor) -> np.ndarray:
    """[B] mean absolute Laplacian of the channel mean of normalised model inputs [B, 3, H, W]: low for photos
    too small or too soft to show the detail species are told apart by. Computed on the model's own input, so the
    app, the evaluator and the exporter measure the same thing."""
    gray = batch.float().mean(dim=1, keepdim=True)
    return torch.nn.functional.conv2d(gray, _LAPLACIAN.to(gray.device)).abs().mean(dim=(1, 2, 3)).double().cpu().numpy()


def log_softmax_np(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ------------------------------------------------------------------------------------------------ the decision


@dataclass(frozen=True)
class GateScores:
    """The parts of the rule for a batch, each [B]: what the verdict is made of, and what the evaluator reports."""

    knn: np.ndarray  # k-NN distance in flower-feature space
    imagenet: np.ndarray  # the ImageNet view's share of the combined log-odds (w . log p)
    combined: np.ndarray  # log-odds of "not a flower"
    imagenet_top: np.ndarray  # ImageNet's most likely class
    plant_like: np.ndarray  # bool: that class is plant-like
    unknown: np.ndarray | None = None  # "a species I don't know" score (k-NN distance and the top probability)
    sharpness: np.ndarray | None = None  # fine detail in the input (:func:`sharpness`); None: not measured


@dataclass(frozen=True)
class FlowerGate:
    """species / unknown_species / not_a_flower, from the ImageNet view and the k-NN distance."""

    knn_k: int
    imagenet_weights: tuple  # one weight per ImageNet class, on its log-probability
    knn_weight: float
    bias: float
    reject_threshold: float  # combined log-odds above this: not a flower
    knn_reject_threshold: float  # a plant-like photo is rejected only if its k-NN distance is also above this
    unknown_threshold: float  # an accepted photo whose unknown-species score is above this: an unknown species
    plant_like: tuple = ()  # ImageNet class indices
    # The unknown-species score: w_knn * k-NN distance + w_top * (-log top probability) + bias. The default
    # (1, 0, 0) is the k-NN distance alone, as models exported before photos from elsewhere were calibrated on.
    unknown_weights: tuple = (1.0, 0.0)
    unknown_bias: float = 0.0
    # A photo whose input sharpness is below this is too small or too soft to judge well (0: never): it is
    # called "too small" rather than an unknown species or "not a flower", unless its "not a flower" log-odds
    # also clear ``low_quality_reject_threshold`` (fitted on such photos of flowers).
    low_quality_sharpness: float = 0.0
    low_quality_reject_threshold: float | None = None
    # One unknown-species threshold per photo group (core.ranks.PhotoGroups); empty: unknown_threshold for all
    unknown_threshold_by_group: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.knn_k, int) or isinstance(self.knn_k, bool) or self.knn_k < 1:
            raise GateConfigError(f"gate.knn_k must be a positive integer, got {self.knn_k!r}")
        weights = tuple(self.imagenet_weights)
        if not weights or not all(_is_number(w) for w in weights):
            raise GateConfigError("gate.imagenet_weights must be a non-empty list of finite numbers")
        object.__setattr__(self, "imagenet_weights", tuple(float(w) for w in weights))
        if self.low_quality_reject_threshold is None:
            object.__setattr__(self, "low_quality_reject_threshold", self.reject_threshold)
        unknown_weights = tuple(self.unknown_weights)
        if len(unknown_weights) != 2 or not all(_is_number(w) for w in unknown_weights):
            raise GateConfigError("gate.unknown_weights must be 2 finite numbers (k-NN distance, -log top probability)")
        object.__setattr__(self, "unknown_weights", tuple(float(w) for w in unknown_weights))
        for name in ("knn_weight", "bias", "reject_threshold", "knn_reject_threshold", "unknown_threshold",
                     "unknown_bias", "low_quality_sharpness", "low_quality_reject_threshold"):
            if not _is_number(getattr(self, name)):
                raise GateConfigError(f"gate.{name} must be a finite number, got {getattr(self, name)!r}")
            object.__setattr__(self, name, float(getattr(self, name)))
        by_group = tuple(self.unknown_threshold_by_group)
        if not all(_is_number(t) for t in by_group):
            raise GateConfigError("gate.unknown_threshold_by_group must be a list of finite numbers")
        object.__setattr__(self, "unknown_threshold_by_group", tuple(float(t) for t in by_group))
        plant_like = tuple(self.plant_like)
        if not all(isinstance(i, int) and 0 <= i < len(weights) for i in plant_like):
            raise GateConfigError(f"gate.plant_like must hold ImageNet class indices in [0, {len(weights)})")
        object.__setattr__(self, "plant_like", plant_like)

    @property
    def imagenet_classes(self) -> int:
        return len(self.imagenet_weights)

    def scores(self, imagenet_logits, embeddings, bank: torch.Tensor, probabilities=None,
               input_sharpness=None) -> GateScores:
        """The parts of the rule for ImageNet logits [B, 1000] and pooled flower embeddings [B, C]; with the
        calibrated species probabilities [B, K] the unknown-species score uses the top one too, and with the
        inputs' :func:`sharpness` [B] the too-small rule applies."""
        imagenet_logits = np.asarray(imagenet_logits, dtype=np.float64)
        if imagenet_logits.ndim != 2 or imagenet_logits.shape[1] != self.imagenet_classes:
            raise ValueError(f"imagenet logits must be [B, {self.imagenet_classes}], got {imagenet_logits.shape}")
        knn = knn_distance(embeddings, bank, self.knn_k)
        imagenet = log_softmax_np(imagenet_logits) @ np.asarray(self.imagenet_weights)
        top = imagenet_logits.argmax(axis=1)
        return GateScores(knn=knn, imagenet=imagenet, combined=imagenet + self.knn_weight * knn + self.bias,
                          imagenet_top=top, plant_like=np.isin(top, self.plant_like),
                          unknown=self.unknown_scores(knn, probabilities),
                          sharpness=None if input_sharpness is None else np.asarray(input_sharpness, dtype=np.float64))

    def unknown_scores(self, knn: np.ndarray, probabilities=None) -> np.ndarray:
        w_knn, w_top = self.unknown_weights
        if w_top and probabilities is None:
            raise ValueError("this model's unknown-species rule needs the calibrated species probabilities")
        surprise = 0.0 if not w_top else -np.log(np.clip(np.asarray(probabilities, dtype=np.float64).max(axis=1), 1e-12, 1.0))
        return w_knn * np.asarray(knn) + w_top * surprise + self.unknown_bias

    def low_quality(self, scores: GateScores) -> np.ndarray:
        """bool [B]: too small or too soft to judge well (False where sharpness was not measured)."""
        if scores.sharpness is None or not self.low_quality_sharpness:
            return np.zeros(len(scores.knn), dtype=bool)
        return scores.sharpness < self.low_quality_sharpness

    def rejected(self, scores: GateScores) -> np.ndarray:
        """bool [B]: not a flower. The ImageNet view alone never rejects a photo it files as plant-like, and a
        photo too small to judge is rejected only on the stricter evidence fitted on small photos of flowers."""
        threshold = np.where(self.low_quality(scores), max(self.reject_threshold, self.low_quality_reject_threshold),
                             self.reject_threshold)
        return self._rejected_at(scores, threshold)

    def _rejected_at(self, scores: GateScores, threshold) -> np.ndarray:
        """The "not a flower" rule at ``threshold`` (a number or one per photo), with the plant-like guard."""
        return (scores.combined > threshold) & (~scores.plant_like | (scores.knn > self.knn_reject_threshold))

    def unknown_thresholds(self, count: int, groups=None) -> np.ndarray:
        """[B] the unknown-species threshold of each photo: its group's, where the rule has them."""
        if self.unknown_threshold_by_group and groups is not None:
            return np.asarray(self.unknown_threshold_by_group)[np.asarray(groups, dtype=int)]
        return np.full(count, self.unknown_threshold)

    def verdicts(self, scores: GateScores, groups=None) -> list[Verdict]:
        """species / unknown_species / not_a_flower / too_small per photo. "too small" replaces what a small or
        soft photo would otherwise be told (an unknown species, or not a flower on the ordinary evidence): that
        may be the photo's fault, not the flower's."""
        rejected = self.rejected(scores)
        unknown = ((scores.unknown if scores.unknown is not None else scores.knn)
                   > self.unknown_thresholds(len(scores.knn), groups))
        ordinary_reject = self._rejected_at(scores, self.reject_threshold)
        small = self.low_quality(scores)
        verdicts = []
        for r, u, o, q in zip(rejected, unknown, ordinary_reject, small):
            if r:
                verdicts.append(Verdict.NOT_A_FLOWER)
            elif q and (u or o):
                verdicts.append(Verdict.TOO_SMALL)
            else:
                verdicts.append(Verdict.UNKNOWN_SPECIES if u else Verdict.SPECIES)
        return verdicts

    def to_dict(self) -> dict:
        return {"knn_k": self.knn_k, "knn_weight": self.knn_weight, "bias": self.bias,
                "reject_threshold": self.reject_threshold, "knn_reject_threshold": self.knn_reject_threshold,
                "unknown_threshold": self.unknown_threshold, "plant_like": list(self.plant_like),
                "unknown_weights": list(self.unknown_weights), "unknown_bias": self.unknown_bias,
                "low_quality_sharpness": self.low_quality_sharpness,
                "low_quality_reject_threshold": self.low_quality_reject_threshold,
                "unknown_threshold_by_group": list(self.unknown_threshold_by_group),
                "imagenet_weights": [round(w, 6) for w in self.imagenet_weights]}

    @classmethod
    def from_dict(cls, data) -> "FlowerGate":
        if not isinstance(data, dict):
            raise GateConfigError(f"gate must be an object, got {type(data).__name__}")
        fields = ("knn_k", "imagenet_weights", "knn_weight", "bias", "reject_threshold", "knn_reject_threshold",
                  "unknown_threshold")
        missing = [name for name in fields if name not in data]
        if missing:
            raise GateConfigError(f"gate is missing {', '.join(missing)}")
        if not isinstance(data["imagenet_weights"], list) or not isinstance(data.get("plant_like", []), list):
            raise GateConfigError("gate.imagenet_weights and gate.plant_like must be lists")
        optional = {name: data[name] for name in ("unknown_bias", "low_quality_sharpness", "low_quality_reject_threshold")
                    if name in data}
        if "unknown_threshold_by_group" in data:
            if not isinstance(data["unknown_threshold_by_group"], list):
                raise GateConfigError("gate.unknown_threshold_by_group must be a list")
            optional["unknown_threshold_by_group"] = tuple(data["unknown_threshold_by_group"])
        if "unknown_weights" in data:
            if not isinstance(data["unknown_weights"], list):
                raise GateConfigError("gate.unknown_weights must be a list")
            optional["unknown_weights"] = tuple(data["unknown_weights"])
        return cls(**{name: data[name] for name in fields}, plant_like=tuple(data.get("plant_like", [])), **optional)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plant_like_indices(wnids: Sequence[str]) -> tuple:
    """Indices of :data:`PLANT_LIKE_WNIDS` in an ImageNet class order given as WordNet ids."""
    wanted = set(PLANT_LIKE_WNIDS)
    return tuple(index for index, wnid in enumerate(wnids) if wnid in wanted)
