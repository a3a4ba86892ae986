"""Answer at the deepest rank that is sure enough, with rules that depend on what kind of photo it is.

- :class:`PhotoGroups` puts each photo in a group from what the model sees at prediction time: a "shift" score
  (a logistic regression on the photo's normalised embedding, its k-NN distance to the training photos and its
  sharpness, fitted to tell the training collection's held-out photos from photos taken elsewhere), cut at
  fitted edges. The verdict's unknown-species threshold, the prediction sets and the rank thresholds are fitted
  per group (Mondrian / group-conditional calibration), so a photo like the training collection's keeps its
  species answer and small sets, and a shifted one falls back honestly.
- :class:`RankRule` rolls the calibrated species probabilities up to genus and family (sums over the taxonomy),
  and names the species when its probability clears the group's species threshold, else the genus, else the
  family, else nothing ("not sure"). The thresholds are fitted so that each rank's answers are right as often as
  the rule's ``accuracy`` promises, on photos never trained on (``flowerdemo.training.fitting.ranks``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .taxonomy import Rank, Taxonomy


class RankConfigError(ValueError):
    """A rank rule or photo grouping (usually from an artifact's metadata) is malformed."""


RANKS = tuple(Rank)  # deepest first: the order the rule walks up


@dataclass(frozen=True)
class Answer:
    """The taxon an answer names (rank None: nothing is sure enough, or the photo is not a flower)."""

    rank: Rank | None
    name: str | None = None  # the common name ("carnation", "pinks"); the Latin name where there is none
    scientific_name: str | None = None  # binomial, or the Latin genus or family name
    probability: float | None = None  # the calibrated probability of the taxon (summed over its classes)
    classes: tuple = ()  # class indices inside the taxon, most likely first

    def to_dict(self) -> dict:
        return {"rank": None if self.rank is None else self.rank.value, "name": self.name,
                "scientific_name": self.scientific_name,
                "probability": None if self.probability is None else round(float(self.probability), 6)}


NO_ANSWER = Answer(rank=None)


# ------------------------------------------------------------------------------------------------ groups


@dataclass(frozen=True)
class PhotoGroups:
    """Group index per photo from its "shift" score: ``w . [embedding, knn, log sharpness] + b``, cut at
    ``edges`` (ascending). Group 0 looks most like the training collection."""

    weights: tuple  # one per embedding dimension, then k-NN distance, then log sharpness
    bias: float
    edges: tuple  # len = groups - 1
    names: tuple = ()  # one per group, for reports

    def __post_init__(self) -> None:
        weights = tuple(self.weights)
        if len(weights) < 3 or not all(_finite(w) for w in weights):
            raise RankConfigError("photo_groups.weights must be finite numbers (embedding, k-NN, sharpness)")
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        edges = tuple(self.edges)
        if not all(_finite(e) for e in edges) or list(edges) != sorted(edges):
            raise RankConfigError("photo_groups.edges must be ascending finite numbers")
        object.__setattr__(self, "edges", tuple(float(e) for e in edges))
        if not _finite(self.bias):
            raise RankConfigError(f"photo_groups.bias must be a finite number, got {self.bias!r}")
        object.__setattr__(self, "bias", float(self.bias))
        names = tuple(self.names) or tuple(f"group {i}" for i in range(len(edges) + 1))
        if len(names) != len(edges) + 1:
            raise RankConfigError("photo_groups.names must have one name per group (len(edges) + 1)")
        object.__setattr__(self, "names", names)

    @property
    def count(self) -> int:
        return len(self.edges) + 1

    @property
    def embedding_size(self) -> int:
        return len(self.weights) - 2

    def scores(self, embeddings, knn, input_sharpness) -> np.ndarray:
        """[B] shift scores from embeddings [B, C] (any norm: normalised here), k-NN distances and sharpness."""
        return shift_features(embeddings, knn, input_sharpness) @ np.asarray(self.weights) + self.bias

    def assign(self, scores) -> np.ndarray:
        """[B] group index: how many edges lie at or below each score."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(scores, dtype=np.float64), side="right")

    def to_dict(self) -> dict:
        return {"weights": [round(w, 7) for w in self.weights], "bias": self.bias, "edges": list(self.edges),
                "names": list(self.names)}

    @classmethod
    def from_dict(cls, data) -> "PhotoGroups":
        if not isinstance(data, dict) or not isinstance(data.get("weights"), list) or not isinstance(data.get("edges"), list):
            raise RankConfigError("photo_groups must be an object with lists weights and edges")
        return cls(weights=tuple(data["weights"]), bias=data.get("bias", 0.0), edges=tuple(data["edges"]),
                   names=tuple(data.get("names") or ()))


def shift_features(embeddings, knn, input_sharpness) -> np.ndarray:
    """[B, C + 2]: the normalised embedding, the k-NN distance and log sharpness: what the groups are cut on."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    detail = np.log(np.clip(np.asarray(input_sharpness, dtype=np.float64), 1e-6, None))
    return np.column_stack([embeddings / np.clip(norms, 1e-12, None), np.asarray(knn, dtype=np.float64), detail])


# ------------------------------------------------------------------------------------------------ roll-up


class RollUp:
    """Sums of the species probabilities over each genus and family of a taxonomy."""

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self.groups = {Rank.GENUS: taxonomy.members("genus"), Rank.FAMILY: taxonomy.members("family")}
        self.names = {rank: tuple(groups) for rank, groups in self.groups.items()}
        count = len(taxonomy.taxa)
        self.matrices = {}
        for rank, groups in self.groups.items():
            matrix = np.zeros((count, len(groups)))
            for column, members in enumerate(groups.values()):
                matrix[members, column] = 1.0
            self.matrices[rank] = matrix

    def top(self, probabilities: np.ndarray, rank: Rank) -> tuple[np.ndarray, np.ndarray]:
        """(index of the most likely taxon at ``rank`` [B], its probability [B]); for species, the class index."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        rolled = probabilities if rank is Rank.SPECIES else probabilities @ self.matrices[rank]
        best = rolled.argmax(axis=1)
        return best, rolled[np.arange(len(rolled)), best]

    def members(self, rank: Rank, index: int) -> np.ndarray:
        if rank is Rank.SPECIES:
            return np.asarray([index])
        return self.groups[rank][self.names[rank][index]]

    def answer(self, probabilities_row: np.ndarray, rank: Rank, index: int) -> Answer:
        row = np.asarray(probabilities_row, dtype=np.float64)
        members = self.members(rank, index)
        ordered = tuple(int(i) for i in members[np.argsort(-row[members], kind="stable")])
        probability = float(row[members].sum())
        if rank is Rank.SPECIES:
            taxon = self.taxonomy.taxa[index]
            return Answer(rank, taxon.common_name, taxon.scientific_name, probability, ordered)
        latin = self.names[rank][index]
        return Answer(rank, self.taxonomy.group_names.get(latin, latin), latin, probability, ordered)


@dataclass(frozen=True)
class RankRule:
    """Per group of photos, the least calibrated probability at which species, genus and family answers are
    given; ``accuracy``: how often answers at each rank were right on the photos it was fitted on (the claim)."""

    thresholds: tuple  # per group: (species, genus, family), each in [0, 1]; > 1 means never at that rank
    accuracy: tuple = (0.9, 0.9, 0.9)  # the targets the thresholds were fitted to (species, genus, family)
    calibration_images: int = 0

    def __post_init__(self) -> None:
        rows = tuple(tuple(row) for row in self.thresholds)
        if not rows or not all(len(row) == len(RANKS) and all(_finite(v) for v in row) for row in rows):
            raise RankConfigError("ranks.thresholds must be one (species, genus, family) triple of numbers per group")
        object.__setattr__(self, "thresholds", tuple(tuple(float(v) for v in row) for row in rows))
        if len(tuple(self.accuracy)) != len(RANKS) or not all(_finite(v) and 0 < v <= 1 for v in self.accuracy):
            raise RankConfigError("ranks.accuracy must be three numbers in (0, 1]")
        object.__setattr__(self, "accuracy", tuple(float(v) for v in self.accuracy))

    def answers(self, probabilities: np.ndarray, roll_up: RollUp, groups=None,
                from_rank: Rank = Rank.SPECIES) -> list[Answer]:
        """The deepest sure-enough answer per row of calibrated probabilities [B, K], starting at ``from_rank``
        (a flower of a species the model does not know is answered at genus or family rank at most)."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        count = len(probabilities)
        groups = np.zeros(count, dtype=int) if groups is None else np.asarray(groups, dtype=int)
        if groups.size and (groups.min() < 0 or groups.max() >= len(self.thresholds)):
            raise RankConfigError(f"photo group out of range: this rule has {len(self.thresholds)} groups")
        answers = [NO_ANSWER] * count
        open_rows = np.ones(count, dtype=bool)
        for depth, rank in enumerate(RANKS):
            if depth < RANKS.index(from_rank):
                continue
            best, probability = roll_up.top(probabilities, rank)
            threshold = np.asarray([self.thresholds[g][depth] for g in groups])
            sure = open_rows & (probability >= threshold)
            for row in np.flatnonzero(sure):
                answers[row] = roll_up.answer(probabilities[row], rank, int(best[row]))
            open_rows &= ~sure
        return answers

    def to_dict(self) -> dict:
        return {"thresholds": [list(row) for row in self.thresholds], "accuracy": list(self.accuracy),
                "calibration_images": self.calibration_images}

    @classmethod
    def from_dict(cls, data) -> "RankRule":
        if not isinstance(data, dict) or not isinstance(data.get("thresholds"), list):
            raise RankConfigError("ranks must be an object with a list of thresholds")
        return cls(thresholds=tuple(tuple(row) if isinstance(row, list) else () for row in data["thresholds"]),
                   accuracy=tuple(data.get("accuracy", (0.9, 0.9, 0.9))),
                   calibration_images=int(data.get("calibration_images", 0)))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
