"""One answer for several photos of one plant (a bloom from two sides, a close-up and the whole plant...).

The rule, given each photo's calibrated probabilities [K], verdict and photo group:

- A photo that could not be read, or that repeats another one pixel for pixel (the same decoded RGB bytes:
  :func:`pixel_digest`), is left out and named. Nothing left after that is an :class:`EmptyPlantError`.
- Photos that are not flowers are left out and named; the rest (species, a species it does not know, too
  small to judge) are combined. When none is a flower, the plant is "not a flower" (all readable photos are
  combined for the unlikely guesses, as for one photo).
- Evidence: the sum of the photos' log-probabilities divided by a temperature for sets, renormalised
  (``softmax(sum_i log p_i / tau(n))``). ``tau = 1`` is the plain product of the calibrated probabilities (right
  for photos whose errors are independent); ``tau = n`` is their mean log-probability (right for photos that
  repeat the same evidence).

  **Why the mean** (``tau(n) = n``, :func:`set_temperature`), measured with ``scripts/measure_plant_sets.py
  --data DATA --collections test elsewhere`` (the bundled model, its own rules and 95% prediction sets, 2,000
  seeded draws of n photos of one species). Fitted by log-likelihood on sets of Flowers-102 validation photos
  (the photos the one-photo temperature was fitted on) the set temperature is degenerate: the model names 98.4% of
  those photos right on their own, every set of two is right, and the fit sharpens (tau 0.69 for n = 2, 0.45 for
  n = 3), which would be over-confident anywhere else. On the test share of the photos from other collections
  (DATA/elsewhere's known species, the recipe's file-name-hash split: never trained or calibrated on) one photo's
  sets hold the right species 99.2% of the time; the product's sets of 2 and 3 photos 97.9% and 97.2%, the
  mean's 99.6% and 99.9%. Photos of one plant share their lighting, season and camera, so their errors are far
  from independent; the mean keeps one photo's calibration when the photos repeat each other and errs on the side
  of larger sets when they do not. The top class, and so the top-1 gain (there 84.6% -> 89.5% -> 91.0% for 1, 2,
  3 photos; on the Flowers-102 test split 95.8% -> 99.1% -> 99.8%), is the same for every tau. A temperature
  fitted per photo group, on photos from elsewhere, is left for an exporter.
- The verdict, from the flower photos: too small to judge when every one of them is; otherwise a known
  species when at least half of the judged ones (not too small) say so, else a flower it does not know (a
  close-up of a leaf may look unknown beside a photo of the bloom). A model without a verdict rule: None.
- The photo group: the most shifted (largest index) among the combined photos, the cautious choice for the
  group-conditional sets and rank thresholds (``core.ranks``).
- The photo that carried the answer: the combined photo giving the combined top class the highest probability.

One usable photo gives that photo's own probabilities, verdict and group unchanged (today's one-photo answer).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence

import numpy as np

from .verdict import Verdict

MAX_PHOTOS = 5  # as Pl@ntNet's identify API: one to five photos of the same plant
_FLOOR = 1e-300  # log(0) guard: a calibrated probability that underflowed to 0


class EmptyPlantError(ValueError):
    """No photo of the set could be used; the message names each one and why (fit to show to a person)."""


class LeftOutKind(str, Enum):
    UNREADABLE = "unreadable"
    DUPLICATE = "duplicate"
    NONFLOWER = "not a flower"


@dataclass(frozen=True)
class PlantPhoto:
    """One photo of the set, as the rule needs it. ``probabilities`` None: it could not be read (``error``)."""

    name: str
    probabilities: np.ndarray | None = None  # [K] calibrated
    verdict: Verdict | None = None
    group: int = 0
    digest: str | None = None  # same digest: the same pixels (pixel_digest)
    error: str | None = None


@dataclass(frozen=True)
class LeftOut:
    index: int  # into the photos given
    name: str
    kind: LeftOutKind
    reason: str  # what a person reads: "not a flower", "the same photo as a.jpg", "cannot be read: ..."


@dataclass(frozen=True)
class Combined:
    probabilities: np.ndarray  # [K] calibrated, for the plant
    verdict: Verdict | None
    group: int
    used: tuple  # indices of the photos combined, in the order given
    left_out: tuple  # LeftOut, in the order given
    carried_by: int  # index of the photo that gives the top class the highest probability
    temperature: float  # tau(n) applied to the summed log-probabilities


def set_temperature(count: int) -> float:
    """tau(n) = n: the mean of the photos' log-probabilities (see the module's docstring for why)."""
    return float(max(1, count))


def pixel_digest(picture) -> str:
    """SHA-256 of a PIL image's decoded pixels (mode and size included): the same photo saved twice, or under
    two names, has one digest; a re-encoded or resized copy does not."""
    digest = hashlib.sha256(f"{picture.mode}:{picture.size[0]}x{picture.size[1]}:".encode())
    digest.update(picture.tobytes())
    return digest.hexdigest()


def combine(photos: Sequence[PlantPhoto],
            temperature: Callable[[int], float] = set_temperature) -> Combined:
    """The plant's answer from its photos (the module's docstring has the rule). Raises EmptyPlantError."""
    if not photos:
        raise EmptyPlantError("No photos were given: add one to five photos of the same plant.")
    left_out, readable, seen = [], [], {}
    for index, photo in enumerate(photos):
        if photo.probabilities is None:
            left_out.append(LeftOut(index, photo.name, LeftOutKind.UNREADABLE,
                                    f"cannot be read: {photo.error or 'not an image'}"))
        elif photo.digest is not None and photo.digest in seen:
            left_out.append(LeftOut(index, photo.name, LeftOutKind.DUPLICATE,
                                    f"the same photo as {photos[seen[photo.digest]].name}"))
        else:
            if photo.digest is not None:
                seen[photo.digest] = index
            readable.append(index)
    if not readable:
        reasons = "; ".join(f"{item.name}: {item.reason}" for item in left_out)
        raise EmptyPlantError(f"None of the {len(photos)} photos could be used ({reasons}).")
    flowers = [i for i in readable if photos[i].verdict is None or photos[i].verdict.is_flower]
    if flowers:
        used = flowers
        left_out += [LeftOut(i, photos[i].name, LeftOutKind.NONFLOWER, "not a flower")
                     for i in readable if i not in flowers]
        left_out.sort(key=lambda item: item.index)
        verdict = plant_verdict([photos[i].verdict for i in used])
    else:
        used, verdict = readable, Verdict.NOT_A_FLOWER
    rows = np.stack([np.asarray(photos[i].probabilities, dtype=np.float64) for i in used])
    tau = temperature(len(used))
    probabilities = rows[0].copy() if len(used) == 1 else combine_probabilities(rows, tau)
    top = int(np.argmax(probabilities))
    carried_by = used[int(np.argmax(rows[:, top]))]
    return Combined(probabilities=probabilities, verdict=verdict, group=max(int(photos[i].group) for i in used),
                    used=tuple(used), left_out=tuple(left_out), carried_by=carried_by, temperature=float(tau))


def combine_probabilities(rows, tau: float) -> np.ndarray:
    """softmax(sum_i log p_i / tau) for calibrated probabilities ``rows`` [n, K]."""
    if not tau > 0:
        raise ValueError(f"the set temperature must be positive, got {tau}")
    scores = np.log(np.clip(np.asarray(rows, dtype=np.float64), _FLOOR, None)).sum(axis=0) / tau
    scores -= scores.max()
    weights = np.exp(scores)
    return weights / weights.sum()


def plant_verdict(verdicts: Sequence[Verdict | None]) -> Verdict | None:
    """The verdict of a plant from its flower photos' verdicts (none of them "not a flower")."""
    if not verdicts or any(v is None for v in verdicts):
        return None  # a model without a verdict rule
    judged = [v for v in verdicts if v is not Verdict.TOO_SMALL]
    if not judged:
        return Verdict.TOO_SMALL
    known = sum(v is Verdict.SPECIES for v in judged)
    return Verdict.SPECIES if 2 * known >= len(judged) else Verdict.UNKNOWN_SPECIES


def fit_set_temperature(log_probabilities, sets, labels, grid=None) -> float:
    """The tau minimising the negative log-likelihood of the true class for ``sets`` [S, n] of row indices into
    ``log_probabilities`` [N, K] (one photo's calibrated log-probabilities per row), whose true class is
    ``labels`` [S]; searched over ``grid`` (default: 0.5 to 2n in 80 log-spaced steps, then refined)."""
    log_probabilities = np.asarray(log_probabilities, dtype=np.float64)
    sets, labels = np.asarray(sets, dtype=int), np.asarray(labels, dtype=int)
    summed = log_probabilities[sets].sum(axis=1)  # [S, K]
    count = sets.shape[1]

    def nll(tau: float) -> float:
        scores = summed / tau
        scores = scores - scores.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scores).sum(axis=1))
        return float(np.mean(log_norm - scores[np.arange(len(labels)), labels]))

    candidates = np.geomspace(0.5, 2.0 * max(1, count), 80) if grid is None else np.asarray(grid, dtype=np.float64)
    best = min(candidates, key=nll)
    fine = np.geomspace(best / 1.1, best * 1.1, 41) if grid is None else [best]
    return float(min(fine, key=nll))
