"""Every case of the generated hostile corpus (tests/corpus.py): a clean RGB image or a clean InvalidImageError."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from corpus import CASES, ERROR_IDS, OK_IDS
from flowerdemo.serve.predict import Prediction
from flowerdemo.core.preprocess import MAX_IMAGE_PIXELS, InvalidImageError, load_image


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from corpus import write_corpus

    folder = tmp_path_factory.mktemp("hostile")
    return {case.id: case.path for case in write_corpus(folder)}


def assert_sensible_rgb(image: Image.Image) -> None:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.width >= 1 and image.height >= 1
    assert image.width * image.height <= MAX_IMAGE_PIXELS


@pytest.mark.parametrize("case_id", OK_IDS)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_ok_case_loads_as_rgb(case_id, as_bytes, corpus_dir):
    image = load_image(CASES[case_id].data if as_bytes else corpus_dir[case_id])
    assert_sensible_rgb(image)


@pytest.mark.parametrize("case_id", ERROR_IDS)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_error_case_raises_invalid_image_error(case_id, as_bytes, corpus_dir):
    with pytest.raises(InvalidImageError) as info:
        load_image(CASES[case_id].data if as_bytes else corpus_dir[case_id])
    assert str(info.value).strip()


@pytest.mark.parametrize("case_id", OK_IDS)
def test_ok_case_is_classified(case_id, classifier):
    started = time.perf_counter()
    prediction = classifier.predict(CASES[case_id].data, top_k=3)
    assert isinstance(prediction, Prediction)
    assert len(prediction.top_k) == 3
    assert all(0.0 <= prob <= 1.0 for _, prob in prediction.top_k)
    assert np.isfinite(prediction.ood_score)
    # Extreme aspect ratios (1x30000) must not be blown up to gigapixels before the center crop.
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("case_id", ERROR_IDS)
def test_error_case_through_classifier(case_id, classifier):
    with pytest.raises(InvalidImageError):
        classifier.predict(CASES[case_id].data)


def pixel(image: Image.Image, x: float, y: float) -> np.ndarray:
    """The RGB value at a relative position (0..1) of the image."""
    return np.asarray(image)[int(y * (image.height - 1)), int(x * (image.width - 1))].astype(int)


def assert_close(actual, expected, tolerance=12) -> None:
    assert np.abs(np.asarray(actual, dtype=int) - np.asarray(expected)).max() <= tolerance, (actual, expected)


@pytest.mark.parametrize("case_id", [c for c in OK_IDS if CASES[c].check == "upright"])
def test_exif_orientation_is_applied(case_id, corpus_dir):
    with Image.open(corpus_dir[case_id]) as raw:
        assert raw.size == (60, 40), "the stored pixels must be landscape, i.e. differ from the upright picture"
    image = load_image(corpus_dir[case_id])
    assert image.size == (40, 60)
    assert_close(pixel(image, 0.5, 0.1), (255, 0, 0))  # top: red
    assert_close(pixel(image, 0.5, 0.9), (0, 0, 255))  # bottom: blue


@pytest.mark.parametrize("case_id", [c for c in OK_IDS if CASES[c].check == "16bit"])
def test_16bit_is_scaled_not_clipped(case_id):
    gray = np.asarray(load_image(CASES[case_id].data)).astype(float)
    assert gray.min() > 0 and gray.max() < 255, "all-black or saturated: 16-bit values were not scaled"
    # The ramp spans 10000..50000 of 65535, i.e. 8-bit 39..195 with mean ~117.
    assert abs(gray.mean() - 116.7) < 2
    assert abs(gray.min() - 38.9) < 2 and abs(gray.max() - 194.6) < 2


def test_palette_transparency_is_composited_on_white():
    image = load_image(CASES["palette_transparency_png"].data)
    assert_close(pixel(image, 0.1, 0.5), (255, 255, 255), tolerance=0)  # transparent black -> white
    assert_close(pixel(image, 0.9, 0.5), (255, 0, 0), tolerance=0)  # opaque red stays red


@pytest.mark.parametrize("case_id", ["rgba_png", "la_png"])
def test_alpha_is_composited_on_white(case_id):
    image = load_image(CASES[case_id].data)
    assert_close(pixel(image, 0.1, 0.5), (255, 255, 255), tolerance=0)
    assert_close(pixel(image, 0.9, 0.5), (30, 30, 30), tolerance=0)


@pytest.mark.parametrize("case_id", ["cmyk_jpeg", "tiny_1x1", "animated_gif", "animated_webp"])
def test_colour_survives(case_id):
    """CMYK is converted with the right polarity; animations give their first (red) frame."""
    assert_close(pixel(load_image(CASES[case_id].data), 0.5, 0.5), (255, 0, 0))


def test_huge_photo_is_resized_not_refused(corpus_dir):
    image = load_image(corpus_dir["huge_jpeg_6000x4000"])
    assert max(image.size) <= 6000
    assert abs(image.width / image.height - 1.5) < 0.01


def test_bomb_is_refused_before_decoding(monkeypatch, corpus_dir):
    decoded = []
    original_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(self) or original_load(self))
    started = time.perf_counter()
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(corpus_dir["bomb_png_30000x30000"])
    assert time.perf_counter() - started < 1.0
    assert decoded == [], "the bomb's pixel data was decoded"
    assert corpus_dir["bomb_png_30000x30000"].stat().st_size < 1024


def test_extreme_aspect_ratio_is_cropped_not_blown_up(classifier):
    """A 1x30000 strip would become 256 x 7.7 million pixels if resized whole; the crop keeps it cheap, and
    ordinary shapes (up to 16:1) are left alone."""
    from flowerdemo.core.preprocess import cap_aspect_ratio

    strip = load_image(CASES["strip_1x30000"].data)
    assert cap_aspect_ratio(strip).size == (16, 1)
    panorama = Image.new("RGB", (4000, 250))
    assert cap_aspect_ratio(panorama) is panorama
    started = time.perf_counter()
    explanation = classifier.explain(strip, top_k=2, cam_classes=1)
    assert explanation.view.size == (224, 224)
    assert time.perf_counter() - started < 10
