"""A photo as the store keeps it: upright RGB pixels re-encoded as a fresh JPEG, named by their hash."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from .errors import FeedbackError

MAX_SHORT_SIDE = 1024
JPEG_QUALITY = 90


@dataclass(frozen=True)
class EncodedPhoto:
    sha256: str  # of the decoded, upright RGB pixels (and their size), before resizing
    jpeg: bytes


def encode_photo(image: Image.Image) -> EncodedPhoto:
    """Upright RGB pixels re-encoded as a fresh JPEG (short side at most :data:`MAX_SHORT_SIDE`): no EXIF (GPS),
    ICC, comment or trailing bytes survive."""
    if not isinstance(image, Image.Image):
        raise FeedbackError(f"expected a photo (PIL image), got {type(image).__name__}")
    try:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        pixels = rgb.tobytes()
    except (OSError, ValueError) as error:
        raise FeedbackError(f"this photo cannot be read for saving ({error})") from None
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + pixels).hexdigest()
    clean = Image.frombytes("RGB", rgb.size, pixels)  # a new image: carries none of the original's info
    short_side = min(clean.size)
    if short_side > MAX_SHORT_SIDE:
        scale = MAX_SHORT_SIDE / short_side
        size = (max(1, round(clean.width * scale)), max(1, round(clean.height * scale)))
        clean = clean.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    clean.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return EncodedPhoto(digest, buffer.getvalue())
