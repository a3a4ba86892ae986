""""One of these": split conformal prediction sets over the calibrated probabilities.

Two scores (``method``):

- ``lac`` (Sadinle, Lei & Wasserman 2019, "Least ambiguous set-valued classifiers with bounded error levels"):
  a class's score is one minus its probability, so the set is every class above a probability. Of all
  scores it gives the smallest sets on average at the promised coverage; on photos the model mostly gets right
  the set is mostly the single top species.
- ``raps`` (Angelopoulos et al. 2021, "Uncertainty sets for image classifiers using conformal prediction"),
  without randomisation: a class's score is the probability mass of every class ranked at or above it, plus
  ``penalty`` for each rank beyond ``k_reg``. Without randomisation a sure photo's own mass inflates its
  score, so a model that is right 97 % of the time still gets sets of several species (what every model
  exported before LAC has).

The threshold ``qhat`` is the ceil((n + 1) * level)-th smallest
score of the true classes on n calibration photos never trained on, so a new photo from the same distribution
gets a set that holds its true species with probability at least ``level`` (exchangeability; Vovk et al. 2005).
``penalty = 0`` is APS. Sets always hold the most likely class, which can only raise coverage.

numpy only: the predictor, the exporter and the evaluator all call :meth:`ConformalSets.sets`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class ConformalConfigError(ValueError):
    """A prediction-set rule (usually from an artifact's metadata) is malformed."""


@dataclass(frozen=True)
class ConformalSets:
    level: float  # promised coverage, e.g. 0.95
    qhat: float  # scores at or below this are in the set
    penalty: float = 0.0  # RAPS lambda: added per rank beyond k_reg (0 = APS)
    k_reg: int = 1
    calibration_images: int = 0
    method: str = "raps"  # "lac" or "raps" (above); older models are RAPS
    # Mondrian (group-conditional) thresholds, one per photo group (core.ranks.PhotoGroups); empty: qhat for all
    qhat_by_group: tuple = ()

    def __post_init__(self) -> None:
        if self.method not in SET_METHODS:
            raise ConformalConfigError(f"prediction_sets.method must be one of {', '.join(SET_METHODS)}, "
                                       f"got {self.method!r}")
        if not (isinstance(self.level, float) and 0.0 < self.level < 1.0):
            raise ConformalConfigError(f"prediction_sets.level must be a number in (0, 1), got {self.level!r}")
        if not (isinstance(self.qhat, float) and math.isfinite(self.qhat)):
            raise ConformalConfigError(f"prediction_sets.qhat must be a finite number, got {self.qhat!r}")
        if not (isinstance(self.penalty, float) and self.penalty >= 0):
            raise ConformalConfigError(f"prediction_sets.penalty must be a number >= 0, got {self.penalty!r}")
        if not (isinstance(self.k_reg, int) and self.k_reg >= 0):
            raise ConformalConfigError(f"prediction_sets.k_reg must be an integer >= 0, got {self.k_reg!r}")
        by_group = tuple(self.qhat_by_group)
        if not all(isinstance(q, (int, float)) and not isinstance(q, bool) and math.isfinite(q) for q in by_group):
            raise ConformalConfigError("prediction_sets.qhat_by_group must be a list of finite numbers")
        object.__setattr__(self, "qhat_by_group", tuple(float(q) for q in by_group))

    def to_dict(self) -> dict:
        return {"method": self.method, "level": self.level, "qhat": self.qhat, "penalty": self.penalty,
                "k_reg": self.k_reg, "calibration_images": self.calibration_images,
                "qhat_by_group": list(self.qhat_by_group)}

    @classmethod
    def from_dict(cls, data) -> "ConformalSets":
        if not isinstance(data, dict):
            raise ConformalConfigError(f"prediction_sets must be an object, got {type(data).__name__}")
        try:
            return cls(level=_float(data.get("level")), qhat=_float(data.get("qhat")),
                       penalty=_float(data.get("penalty", 0.0)), k_reg=data.get("k_reg", 1),
                       calibration_images=int(data.get("calibration_images", 0)), method=data.get("method", "raps"),
                       qhat_by_group=tuple(_float(q) for q in data.get("qhat_by_group") or ()))
        except (TypeError, ValueError) as error:
            if isinstance(error, ConformalConfigError):
                raise
            raise ConformalConfigError(f"prediction_sets: {error}") from None

    def sets(self, probabilities: np.ndarray, groups=None) -> list[np.ndarray]:
        """Per row of ``probabilities`` [B, N], the class indices in the set, most likely first (never empty).
        ``groups`` [B]: each photo's group, whose own threshold applies (when the rule has them)."""
        order, scores = self.ranked_scores(probabilities)
        qhat = self.qhat
        if self.qhat_by_group and groups is not None:
            qhat = np.asarray(self.qhat_by_group)[np.asarray(groups, dtype=int)][:, None]
        sizes = np.maximum((scores <= qhat).sum(axis=1), 1)  # scores rise with rank: the set is a prefix
        return [row[:size] for row, size in zip(order, sizes)]

    def ranked_scores(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class indices by falling probability [B, N], this rule's score of each rank [B, N], non-decreasing)."""
        return ranked_scores(probabilities, self.penalty, self.k_reg, self.method)


SET_METHODS = ("lac", "raps")


def _float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConformalConfigError(f"expected a number, got {value!r}")
    return float(value)


def ranked_scores(probabilities: np.ndarray, penalty: float = 0.0, k_reg: int = 1,
                  method: str = "raps") -> tuple[np.ndarray, np.ndarray]:
    """(class indices by falling probability [B, N], the score of each rank [B, N]), scores non-decreasing."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be [B, N], got shape {probabilities.shape}")
    order = np.argsort(-probabilities, axis=1, kind="stable")
    if method == "lac":
        return order, 1.0 - np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(probabilities, order, axis=1), axis=1)
    ranks = np.arange(1, probabilities.shape[1] + 1)
    return order, cumulative + penalty * np.maximum(0, ranks - k_reg)[None, :]
