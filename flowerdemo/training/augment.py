"""Augmentations that reproduce what breaks the model on the photos people take (issue 18): small and soft
photos (a thumbnail or a phone crop blown back up, blur, heavy JPEG), zoomed-out shots (a small bloom, more
background), squashed aspect ratios and, now and then, black and white.

Each step is a small callable on a PIL RGB image that keeps the image's mode, and (except ``Squash``) its size;
each draws from Python's ``random`` so the loader's per-worker seeding (loaders._seed_worker) makes runs repeatable.
``photo_steps`` puts them where they belong around the usual random crop (see preprocess.train_transform).
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps


@dataclass(frozen=True)
class Squash:
    """Resize one side by ``factor`` in [low, 1): the stretched or squashed photos apps and editors produce."""

    p: float = 0.2
    low: float = 0.65

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        factor = random.uniform(self.low, 1.0)
        width, height = image.size
        size = (max(1, round(width * factor)), height) if random.random() < 0.5 else (width, max(1, round(height * factor)))
        return image.resize(size, Image.BILINEAR)


@dataclass(frozen=True)
class ZoomOut:
    """Shrink the photo to ``scale`` of its size and mirror-pad it back: a smaller bloom with more (plausible,
    not flat-coloured) background around it, as in a photo taken from further away."""

    p: float = 0.25
    low: float = 0.4
    high: float = 0.85

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        scale = random.uniform(self.low, self.high)
        width, height = image.size
        small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
        left = random.randint(0, width - small.width)
        top = random.randint(0, height - small.height)
        pad = ((top, height - small.height - top), (left, width - small.width - left), (0, 0))
        return Image.fromarray(np.pad(np.asarray(small), pad, mode="symmetric"))


@dataclass(frozen=True)
class Degrade:
    """What a small or soft photo looks like once the app has scaled it up: down to a short side in
    [``min_side``, ``max_side``] px and back up, a Gaussian blur, a low JPEG quality; each with its own chance."""

    p_downscale: float = 0.35
    min_side: int = 64
    max_side: int = 160
    p_blur: float = 0.2
    max_blur: float = 2.0
    p_jpeg: float = 0.3
    min_quality: int = 25

    def __call__(self, image: Image.Image) -> Image.Image:
        size = image.size
        if random.random() < self.p_downscale:
            side = random.randint(self.min_side, self.max_side)
            ratio = side / min(size)
            if ratio < 1.0:
                small = image.resize((max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio))), Image.BILINEAR)
                image = small.resize(size, Image.BILINEAR)
        if random.random() < self.p_blur:
            image = image.filter(ImageFilter.GaussianBlur(random.uniform(0.3, self.max_blur)))
        if random.random() < self.p_jpeg:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=random.randint(self.min_quality, 90))
            buffer.seek(0)
            with Image.open(buffer) as decoded:
                image = decoded.convert("RGB")
        return image


@dataclass(frozen=True)
class Grayscale:
    """Black and white now and then (kept as three channels)."""

    p: float = 0.05

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        return ImageOps.grayscale(image).convert("RGB")


def photo_steps() -> tuple[list, list]:
    """(steps before the random crop, steps after it): geometry first, so the crop sees the zoomed-out photo;
    degradations last, on the crop at training size, as a blown-up thumbnail reaches the network."""
    return [Squash(), ZoomOut()], [Degrade(), Grayscale()]
