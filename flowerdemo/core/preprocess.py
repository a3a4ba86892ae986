"""The one source of truth for turning an image into a model input.

Every path that feeds the model -- trainer, evaluator, CLI and app -- builds its transform here, from a
small frozen :class:`PreprocessConfig` that also travels inside the exported artifact. Nobody else writes a
mean or a std.
"""
from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Mapping, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")

# A decompression bomb (a tiny file that claims 30000x30000 pixels) must be refused before it is decoded.
# 40 MP covers every phone camera we know of; Pillow raises DecompressionBombError above twice this.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# A truncated JPEG must be an error, not a half-grey image classified with confidence.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Decode big photos straight to about this size (JPEG draft mode): the eval transform only needs 256 px.
DECODE_TARGET_SIZE = 1024
# A 1x40000-pixel strip resized to a 256-pixel short side would be 256 x 10 million pixels (gigabytes, minutes):
# the long side is center-cropped to this many times the short side first. The center crop only looks at the
# middle anyway, and photos up to 16:1 (panoramas included) are not touched.
MAX_ASPECT_RATIO = 16


class InvalidImageError(ValueError):
    """The input is not an image we can read; the message is fit to show to a user."""


class PreprocessConfigError(ValueError):
    """A preprocessing config (usually from an artifact's metadata) is malformed."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input: resize the short side, center crop, normalise."""

    resize: int = 256
    crop: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 2048:
                raise PreprocessConfigError(f"preprocess.{name} must be an integer in [16, 2048], got {value!r}")
        if self.crop > self.resize:
            raise PreprocessConfigError(f"preprocess.crop ({self.crop}) must not exceed resize ({self.resize})")
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                numbers = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise PreprocessConfigError(f"preprocess.{name} must be 3 numbers, got {value!r}") from None
            if len(numbers) != 3 or not all(np.isfinite(numbers)):
                raise PreprocessConfigError(f"preprocess.{name} must be 3 finite numbers, got {value!r}")
            if name == "std" and min(numbers) <= 0:
                raise PreprocessConfigError(f"preprocess.std must be positive, got {value!r}")
            if name == "mean" and not all(0.0 <= v <= 1.0 for v in numbers):
                raise PreprocessConfigError(f"preprocess.mean must lie in [0, 1], got {value!r}")
            object.__setattr__(self, name, numbers)
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessConfigError(
                f"preprocess.interpolation must be one of {', '.join(INTERPOLATIONS)}; got {self.interpolation!r}"
            )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        if not isinstance(data, Mapping):
            raise PreprocessConfigError(f"preprocess must be an object, got {type(data).__name__}")
        known = {"resize", "crop", "mean", "std", "interpolation"}
        missing = known - set(data)
        if missing:
            raise PreprocessConfigError(f"preprocess is missing {', '.join(sorted(missing))}")
        return cls(**{key: data[key] for key in known})


def _pil_interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


def eval_transform(config: PreprocessConfig):
    """PIL RGB image -> normalised float tensor [3, crop, crop]. Resizing happens on PIL (antialiased)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Lambda(cap_aspect_ratio),
            T.Resize(config.resize, interpolation=_pil_interpolation(config.interpolation)),
            T.CenterCrop(config.crop),
            T.PILToTensor(),
            T.ConvertImageDtype(__import__("torch").float32),
            T.Normalize(config.mean, config.std),
        ]
    )


def view_transform(config: PreprocessConfig):
    """The eval transform without normalisation: the RGB image the model actually sees (for overlays)."""
    from torchvision import transforms as T

    return T.Compose(
        [T.Lambda(cap_aspect_ratio), T.Resize(config.resize, interpolation=_pil_interpolation(config.interpolation)),
         T.CenterCrop(config.crop)]
    )


def cap_aspect_ratio(image: Image.Image) -> Image.Image:
    """Center-crop the long side to at most MAX_ASPECT_RATIO x the short side (no-op for ordinary photos)."""
    width, height = image.size
    limit = MAX_ASPECT_RATIO * min(width, height)
    if max(width, height) <= limit:
        return image
    new_width, new_height = min(width, limit), min(height, limit)
    left, top = (width - new_width) // 2, (height - new_height) // 2
    return image.crop((left, top, left + new_width, top + new_height))


def train_transform(config: PreprocessConfig, crop: int, min_scale: float = 0.25, augment: str = "trivialaugment",
                    before_crop=(), after_augment=()):
    """Training augmentation that ends in the same normalisation as :func:`eval_transform`.

    ``before_crop`` / ``after_augment``: PIL steps around the random crop and the colour augmentation (the
    trainer's photo degradations, flowerdemo.training.augment), so the normalisation stays written here only.
    """
    import torch
    from torchvision import transforms as T

    steps = list(before_crop) + [
        T.RandomResizedCrop(crop, scale=(min_scale, 1.0), interpolation=_pil_interpolation(config.interpolation)),
        T.RandomHorizontalFlip(),
    ]
    if augment == "trivialaugment":
        steps.append(T.TrivialAugmentWide(interpolation=_pil_interpolation(config.interpolation)))
    elif augment == "colorjitter":
        steps.append(T.ColorJitter(0.3, 0.3, 0.3, 0.05))
    elif augment != "none":
        raise ValueError(f"augment must be one of trivialaugment, colorjitter, none; got {augment!r}")
    steps += list(after_augment)
    steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize(config.mean, config.std)]
    return T.Compose(steps)


ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


def load_image(source: ImageSource) -> Image.Image:
    """Open anything a user may hand us and return an upright 8-bit RGB PIL image.

    Applies EXIF orientation, takes the first frame of animations, flattens transparency onto white,
    converts CMYK, palette, 16-bit and float images. Raises :class:`InvalidImageError` with a message fit
    for a user for anything that is not a readable image.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InvalidImageError("The file is empty (0 bytes).")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source) and os.path.getsize(source) == 0:
        raise InvalidImageError("The file is empty (0 bytes).")
    try:
        with Image.open(source) as image:
            image.seek(0)  # animated GIF/WebP/APNG: classify the first frame
            if image.format == "JPEG":
                image.draft("RGB", (DECODE_TARGET_SIZE, DECODE_TARGET_SIZE))
            image.load()
            return _to_rgb(image)
    except Image.DecompressionBombError as error:
        raise InvalidImageError(
            f"The image is too large to open safely ({error}). The limit is {MAX_IMAGE_PIXELS:,} pixels."
        ) from None
    except FileNotFoundError:
        raise InvalidImageError(f"No such file: {source}") from None
    except UnidentifiedImageError:
        raise InvalidImageError("This file is not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError/ValueError depending on the codec.
        raise InvalidImageError(f"The image data is corrupt or truncated ({error}).") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise InvalidImageError("The image has no pixels.")
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _from_array(np.asarray(image))
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def _from_array(array: np.ndarray) -> Image.Image:
    """High-bit-depth or float pixels -> 8-bit RGB, stretched by the dtype's range (not clipped)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or array.size == 0:
        raise InvalidImageError(f"Unsupported image array shape {array.shape}.")
    if array.dtype == np.uint8:
        scaled = array
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        high = 1.0 if finite.max() <= 1.0 else 255.0
        scaled = np.clip(finite / high * 255.0, 0, 255).astype(np.uint8)
    else:
        # uint16 is 16-bit by definition; Pillow's 32-bit "I" mode holds 16-bit PNGs too, so look at the values.
        high = 65535.0 if array.dtype == np.uint16 or array.max() > 255 else 255.0
        scaled = np.clip(array.astype(np.float64) / high * 255.0, 0, 255).round().astype(np.uint8)
    image = Image.fromarray(scaled)
    return _to_rgb(image) if image.mode != "RGB" else image


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every image file below ``folder``, sorted (recursive)."""
    from pathlib import Path

    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
