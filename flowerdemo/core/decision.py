"""Everything a model says about a batch of photos, decided in one place from the network's raw outputs.

The predictor, the evaluator and the exporter's reports all call :func:`decide`, so the calibrated
probabilities, the verdict rule's inputs, the photo groups, the prediction sets and the ranked answers are
assembled once, the same way, from (species logits, pooled embeddings, ImageNet logits, input sharpness).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .ranks import NO_ANSWER, Answer, Rank, RollUp
from .verdict import Verdict
from .gate import GateScores


@dataclass(frozen=True)
class Decisions:
    """Per photo of a batch (each a list or array of length B)."""

    probabilities: np.ndarray  # [B, K] calibrated
    verdicts: list  # Verdict per photo, or None each where the model has no verdict rule
    sets: list  # class indices in the prediction set (most likely first), or None where the model has no sets
    answers: list  # Answer per photo (rank None where nothing is sure enough)
    groups: np.ndarray  # [B] photo group (0 where the model has no groups)
    scores: GateScores | None = None  # the verdict rule's parts, for reports and "it looks like a ..."


def calibrated_probabilities(logits, temperature: float) -> np.ndarray:
    """softmax(logits / T) [B, K] in float64: the one place the temperature is applied."""
    scaled = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / temperature
    return torch.softmax(scaled, dim=1).numpy()


def decide(metadata, logits, embeddings, imagenet_logits=None, input_sharpness=None, bank=None) -> Decisions:
    """The model's answers for raw outputs: ``logits`` [B, K], ``embeddings`` [B, C] (pooled feature maps),
    ``imagenet_logits`` [B, 1000] and the k-NN ``bank`` (needed when the model has a verdict rule),
    ``input_sharpness`` [B]."""
    probabilities = calibrated_probabilities(logits, metadata.temperature)
    count = len(probabilities)
    groups = np.zeros(count, dtype=int)
    scores, verdicts = None, [None] * count
    if metadata.gate is not None:
        scores = metadata.gate.scores(np.asarray(imagenet_logits), torch.as_tensor(np.asarray(embeddings)), bank,
                                      probabilities, input_sharpness)
        if metadata.photo_groups is not None:
            groups = metadata.photo_groups.assign(
                metadata.photo_groups.scores(embeddings, scores.knn, _sharpness_or_ones(input_sharpness, count)))
        verdicts = metadata.gate.verdicts(scores, groups)
    return decide_from_probabilities(metadata, probabilities, verdicts, groups, scores)


def decide_from_probabilities(metadata, probabilities, verdicts: list, groups, scores: GateScores | None = None
                              ) -> Decisions:
    """The prediction sets and ranked answers for calibrated ``probabilities`` [B, K] whose verdicts and photo
    groups are known: what :func:`decide` does after the verdict rule, and what a plant's combined probabilities
    (``core.combine``) are answered with, so one photo and several get the same sets and rank rule."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    groups = np.asarray(groups, dtype=int)
    count = len(probabilities)
    sets = metadata.prediction_sets.sets(probabilities, groups) if metadata.prediction_sets is not None else [None] * count
    answers = ranked_answers(metadata, probabilities, list(verdicts), groups)
    return Decisions(probabilities, list(verdicts), sets, answers, groups, scores)


def ranked_answers(metadata, probabilities: np.ndarray, verdicts: list, groups: np.ndarray) -> list[Answer]:
    """The deepest sure-enough taxon per photo. Without a rank rule (older models): the top species, as before.
    Not a flower: no answer. A flower it does not know: at most its genus or family (never a species)."""
    if metadata.ranks is None or metadata.taxonomy is None:
        return [_species_answer(metadata, row) if verdict in (None, Verdict.SPECIES) else NO_ANSWER
                for row, verdict in zip(probabilities, verdicts)]
    roll_up = RollUp(metadata.taxonomy)
    answers = metadata.ranks.answers(probabilities, roll_up, groups)
    unknown = [i for i, verdict in enumerate(verdicts) if verdict is Verdict.UNKNOWN_SPECIES]
    if unknown:
        above_species = metadata.ranks.answers(probabilities[unknown], roll_up, groups[unknown], from_rank=Rank.GENUS)
        for index, answer in zip(unknown, above_species):
            answers[index] = answer
    return [NO_ANSWER if verdict is Verdict.NOT_A_FLOWER else answer for answer, verdict in zip(answers, verdicts)]


def _species_answer(metadata, row: np.ndarray) -> Answer:
    best = int(np.argmax(row))
    taxonomy = metadata.taxonomy
    if taxonomy is None:
        return Answer(Rank.SPECIES, metadata.class_names[best], None, float(row[best]), (best,))
    taxon = taxonomy.taxa[best]
    return Answer(Rank.SPECIES, taxon.common_name, taxon.scientific_name, float(row[best]), (best,))


def _sharpness_or_ones(input_sharpness, count: int) -> np.ndarray:
    return np.ones(count) if input_sharpness is None else np.asarray(input_sharpness, dtype=np.float64)
