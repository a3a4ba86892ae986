"""The calibration pool: the photos every rule a model carries is fitted on (the temperature, the prediction sets,
the verdict rule), as the network's outputs. The exporter collects it; :mod:`.calibrate` fits on it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import Outputs
from ..field import ANSWERED_KINDS, UNKNOWN


@dataclass(frozen=True)
class CalibrationPool:
    """What the temperature, the prediction sets and the verdict rule are fitted on: the val photos never
    trained on and, with ``--extra-data``, the calibration share of the photos from elsewhere (never trained on,
    never reported on; training/field.py). ``field`` rows carry their accepted class indices; unknown species
    carry none."""

    val: Outputs
    field: Outputs | None = None
    field_kinds: tuple = ()
    field_accept: tuple = ()  # per field photo, the accepted class indices

    @property
    def has_field(self) -> bool:
        return self.field is not None and len(self.field) > 0

    def sharp(self, level: float) -> "CalibrationPool":
        """The pool without the field photos whose sharpness is under ``level`` (val is kept whole)."""
        if not self.has_field:
            return self
        keep = self.field.sharpness >= level
        field = Outputs(self.field.logits[keep], self.field.embeddings[keep], self.field.labels[keep],
                        self.field.imagenet_logits[keep], self.field.sharpness[keep])
        return CalibrationPool(self.val, field, tuple(k for k, m in zip(self.field_kinds, keep) if m),
                               tuple(a for a, m in zip(self.field_accept, keep) if m))

    def known_field(self) -> np.ndarray:
        return np.array([kind in ANSWERED_KINDS and bool(accept)
                         for kind, accept in zip(self.field_kinds, self.field_accept)], dtype=bool)

    def unknown_field(self) -> np.ndarray:
        return np.array([kind == UNKNOWN for kind in self.field_kinds], dtype=bool)

    def labelled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, labels, sharpness) of every photo of a known species: val, then the field's known and
        genus-level photos, each labelled with the accepted class the model ranks highest (any of them is right)."""
        if not self.has_field:
            return self.val.logits, self.val.labels, self.val.sharpness
        known = self.known_field()
        logits = self.field.logits[known]
        labels = np.array([max(accept, key=lambda i: row[i]) for row, accept
                           in zip(logits, [a for a, k in zip(self.field_accept, known) if k])], dtype=np.int64)
        return (np.concatenate([self.val.logits, logits]), np.concatenate([self.val.labels, labels]),
                np.concatenate([self.val.sharpness, self.field.sharpness[known]]))

    def flowers(self) -> Outputs:
        """Every flower photo (known and unknown species): what "not a flower" must accept."""
        if not self.has_field:
            return self.val
        parts = (self.val, self.field)
        return Outputs(np.concatenate([o.logits for o in parts]), np.concatenate([o.embeddings for o in parts]),
                       np.concatenate([self.val.labels, np.full(len(self.field), -1)]),
                       np.concatenate([o.imagenet_logits for o in parts]), np.concatenate([o.sharpness for o in parts]))

    def report(self, sharp: "CalibrationPool") -> dict:
        """How many photos of each kind the pool holds (``sharp``: the pool with enough detail to judge)."""
        return {"val_photos": int(len(self.val)), "field_photos": int(len(self.field)) if self.has_field else 0,
                "field_known": int(self.known_field().sum()) if self.has_field else 0,
                "field_unknown_species": int(self.unknown_field().sum()) if self.has_field else 0,
                "field_photos_with_detail": int(len(sharp.field)) if sharp.has_field else 0}
