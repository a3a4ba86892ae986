"""Several photos of one plant: what :meth:`FlowerClassifier.predict_plant` and ``explain_plant`` return, and
how the photos are read (each one on its own, so one bad file spoils nothing). The combining rule itself is
``flowerdemo.core.combine``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core.combine import LeftOut, pixel_digest
from ..core.preprocess import ImageSource, InvalidImageError, load_image


@dataclass(frozen=True)
class PlantPrediction:
    prediction: Any  # Prediction: the plant's answer (one usable photo: exactly that photo's own answer)
    names: tuple  # per photo given, the name it is reported by
    photos: tuple  # per photo given, its own Prediction (None: it could not be read; a repeat: its original's)
    used: tuple  # indices of the photos the answer combines
    left_out: tuple  # core.combine.LeftOut: photos left out, and why
    carried_by: int  # index of the photo that gives the plant's top class the highest probability
    temperature: float = 1.0  # the set temperature the evidence was combined with (core.combine)

    @property
    def carrier(self) -> str:
        return self.names[self.carried_by]

    def to_dict(self) -> dict:
        """The plant's prediction fields, with the files, those left out and the one that carried the answer."""
        return {"files": list(self.names), **self.prediction.to_dict(),
                "left_out": [{"file": item.name, "reason": item.reason} for item in self.left_out],
                "carried_by": self.carrier}


@dataclass(frozen=True)
class PlantExplanation:
    plant: PlantPrediction
    views: tuple  # per used photo (in ``plant.used`` order): the centre crop the model saw, RGB
    heatmaps: np.ndarray  # [len(used), h, w]: where each used photo shows the plant's top class
    top_probabilities: tuple = ()  # per used photo: its own probability of the plant's top class
    photo: Any = None  # PIL image: the photo that carried the answer, as read (upright RGB)


@dataclass(frozen=True)
class ReadPhoto:
    name: str
    picture: Any = None  # PIL image, upright RGB; None when it could not be read
    digest: str | None = None
    error: str | None = None


def photo_name(image: ImageSource, index: int) -> str:
    """How a photo is named in the answer: its file name, else "photo N" (1-based)."""
    if isinstance(image, (str, os.PathLike)):
        return os.path.basename(os.fspath(image)) or f"photo {index + 1}"
    return str(getattr(image, "filename", "") and os.path.basename(image.filename)) or f"photo {index + 1}"


def read_photos(images: Sequence[ImageSource], names: Sequence[str] | None = None) -> list[ReadPhoto]:
    """Each image opened with the project's one loader, with its pixel digest; a failure is kept as its message."""
    if names is not None and len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} photos")
    photos = []
    for index, image in enumerate(images):
        name = names[index] if names is not None else photo_name(image, index)
        try:
            picture = load_image(image)
        except InvalidImageError as error:
            photos.append(ReadPhoto(name, error=str(error)))
            continue
        except (OSError, ValueError) as error:  # a path that is a folder, a stream that fails...
            photos.append(ReadPhoto(name, error=f"{type(error).__name__}: {error}"))
            continue
        photos.append(ReadPhoto(name, picture, pixel_digest(picture)))
    return photos


def left_out_text(left_out: Sequence[LeftOut]) -> str:
    """"a.jpg (not a flower), b.jpg (the same photo as c.jpg)" for messages."""
    return ", ".join(f"{item.name} ({item.reason})" for item in left_out)
