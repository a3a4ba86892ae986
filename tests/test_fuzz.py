"""Fuzzing the app's entry point: raw upload bytes -> ``FlowerClassifier.predict`` -> a Prediction, or an
InvalidImageError with a message. Never any other exception. Deterministic (derandomize) and bounded."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flowerdemo.serve.predict import FlowerClassifier, Prediction
from flowerdemo.core.preprocess import InvalidImageError

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),  # Pillow's notes on the garbage it is fed
              pytest.mark.filterwarnings("ignore:Saving I mode images as PNG is deprecated")]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM",
         b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00"]


def outcome(classifier: FlowerClassifier, data: bytes) -> str:
    """What the app does with an upload; anything but a Prediction or InvalidImageError fails the test."""
    try:
        prediction = classifier.predict(data, top_k=3)
    except InvalidImageError as error:
        assert str(error).strip(), "an InvalidImageError must say what is wrong"
        return "error"
    assert isinstance(prediction, Prediction)
    assert len(prediction.top_k) == 3 and all(np.isfinite(p) and 0 <= p <= 1 for _, p in prediction.top_k)
    assert prediction.is_flower in (True, False)
    return "ok"


def random_image(draw, mode: str, width: int, height: int) -> Image.Image:
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    if mode in ("I", "I;16", "F"):
        return Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).convert(mode)
    return image.convert(mode) if mode not in ("P", "PA") else image.convert("RGB").quantize(16).convert(mode)


@st.composite
def encoded_images(draw) -> bytes:
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    image = random_image(draw, mode, draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):  # this encoder cannot write this mode: save it as RGB
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


@FUZZ
@given(data=st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048)))
def test_random_bytes(classifier, data):
    outcome(classifier, data)


@FUZZ
@given(data=encoded_images())
@pytest.mark.slow
def test_random_small_images_are_classified(classifier, data):
    assert outcome(classifier, data) == "ok"


@FUZZ
@given(data=encoded_images(), cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                      max_size=8))
def test_corrupted_images(classifier, data, cut, flips):
    """A valid file, truncated and with a few bytes overwritten: either still an image or a clean error."""
    corrupted = bytearray(data[: max(1, int(len(data) * cut))] if cut < 0.9 else data)
    for where, value in flips:
        corrupted[int(where * (len(corrupted) - 1))] = value
    outcome(classifier, bytes(corrupted))
