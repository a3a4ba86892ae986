"""What the app says a photo shows: one of the known species, a flower of a species it does not know, not a
flower, or too small to judge. The rule that decides it (FlowerGate) is :mod:`flowerdemo.core.gate`; this module is
the type alone, with no heavy imports, so the page's code can name verdicts without loading torch."""
from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """What the app says a photo shows. A ``str`` subclass whose values are the words JSON, CSV and the feedback
    store have always carried, so clients keep working; code compares members, never strings."""

    SPECIES = "species"  # one of the known species (or "one of" a few: the prediction set)
    UNKNOWN_SPECIES = "unknown_species"  # a flower, but none of the known species
    NOT_A_FLOWER = "not_a_flower"
    TOO_SMALL = "too_small"  # too little detail to judge: best guesses only

    def __str__(self) -> str:  # csv and f-strings write the value, as the plain strings did
        return self.value

    __format__ = str.__format__

    @property
    def is_flower(self) -> bool:
        return self is not Verdict.NOT_A_FLOWER

    @property
    def has_prediction_set(self) -> bool:
        """Answers that come with a "one of these" set: a named species, and a photo too small to judge well
        (its best guesses)."""
        return self in (Verdict.SPECIES, Verdict.TOO_SMALL)
