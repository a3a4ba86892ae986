"""The rule that answers once for several photos of one plant (flowerdemo.core.combine), on hand-made
probabilities, and the calibration of combined sets on a synthetic collection whose right answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flowerdemo.core.combine import (MAX_PHOTOS, EmptyPlantError, LeftOutKind, PlantPhoto, combine,
                                     combine_probabilities, fit_set_temperature, pixel_digest, plant_verdict,
                                     set_temperature)
from flowerdemo.core.conformal import ConformalSets
from flowerdemo.core.verdict import Verdict

SPECIES, UNKNOWN, NOT_A_FLOWER, SMALL = Verdict.SPECIES, Verdict.UNKNOWN_SPECIES, Verdict.NOT_A_FLOWER, Verdict.TOO_SMALL


def photo(name, probabilities, verdict=SPECIES, group=0, digest=None):
    return PlantPhoto(name, np.asarray(probabilities, dtype=np.float64), verdict, group, digest or name)


def geometric_mean(*rows):
    mean = np.exp(np.mean(np.log(np.asarray(rows, dtype=np.float64)), axis=0))
    return mean / mean.sum()


def test_one_photo_is_that_photos_answer_exactly():
    row = np.array([0.1, 0.7, 0.2])
    for verdict in (SPECIES, UNKNOWN, SMALL, NOT_A_FLOWER, None):
        result = combine([photo("a.jpg", row, verdict, group=2)])
        assert np.array_equal(result.probabilities, row)  # bit for bit, not renormalised
        assert result.verdict is verdict and result.group == 2
        assert result.used == (0,) and result.left_out == () and result.carried_by == 0
        assert result.temperature == 1.0


def test_agreeing_photos_pool_their_evidence_and_the_surest_carries_it():
    a, b = [0.6, 0.3, 0.1], [0.8, 0.1, 0.1]
    result = combine([photo("a.jpg", a), photo("b.jpg", b)])
    assert result.probabilities == pytest.approx(geometric_mean(a, b))  # the mean of the log-probabilities
    assert result.probabilities.argmax() == 0 and result.verdict is SPECIES
    assert result.used == (0, 1) and result.left_out == ()
    assert result.carried_by == 1  # b gives the top class 0.8, a 0.6
    assert result.temperature == set_temperature(2) == 2.0


def test_disagreeing_photos_are_weighed_not_voted():
    # a leans weakly to class 0, b strongly to class 1: the plant is class 1, carried by b
    a, b, c = [0.5, 0.4, 0.1], [0.1, 0.85, 0.05], [0.45, 0.1, 0.45]
    result = combine([photo("a.jpg", a), photo("b.jpg", b), photo("c.jpg", c)])
    assert result.probabilities == pytest.approx(geometric_mean(a, b, c))
    assert result.probabilities.argmax() == 1 and result.carried_by == 1
    # less sure than the surest photo: they disagree
    assert result.probabilities[1] < 0.85


def test_the_product_is_the_set_temperature_one_and_more_confident_than_the_mean():
    rows = np.array([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    product = rows.prod(axis=0) / rows.prod(axis=0).sum()
    assert combine_probabilities(rows, 1.0) == pytest.approx(product)
    assert combine_probabilities(rows, 2.0)[0] < product[0]
    with pytest.raises(ValueError):
        combine_probabilities(rows, 0.0)


def test_a_non_flower_is_left_out_named_and_spoils_nothing():
    flower = [0.2, 0.7, 0.1]
    result = combine([photo("bloom.jpg", flower), photo("dog.jpg", [0.9, 0.05, 0.05], NOT_A_FLOWER, group=3)])
    assert np.array_equal(result.probabilities, flower)  # exactly the flower photo's answer
    assert result.verdict is SPECIES and result.group == 0  # the dog's group is not the plant's
    [left] = result.left_out
    assert (left.index, left.name, left.kind, left.reason) == (1, "dog.jpg", LeftOutKind.NONFLOWER, "not a flower")
    assert result.used == (0,) and result.carried_by == 0


def test_no_flower_at_all_is_not_a_flower_and_nothing_is_left_out():
    result = combine([photo("dog.jpg", [0.6, 0.4], NOT_A_FLOWER), photo("cat.jpg", [0.3, 0.7], NOT_A_FLOWER)])
    assert result.verdict is NOT_A_FLOWER and result.used == (0, 1) and result.left_out == ()
    assert result.probabilities == pytest.approx(geometric_mean([0.6, 0.4], [0.3, 0.7]))


def test_an_unreadable_photo_is_left_out_with_its_reason():
    result = combine([PlantPhoto("holiday.jpg", error="the file is empty"), photo("b.jpg", [0.3, 0.7])])
    [left] = result.left_out
    assert left.kind is LeftOutKind.UNREADABLE and left.name == "holiday.jpg"
    assert "cannot be read" in left.reason and "the file is empty" in left.reason
    assert result.used == (1,) and result.carried_by == 1
    assert np.array_equal(result.probabilities, [0.3, 0.7])


def test_a_repeated_photo_counts_once_and_names_its_first_copy():
    row = [0.2, 0.8]
    result = combine([photo("a.jpg", row, digest="same"), photo("b.jpg", [0.5, 0.5]),
                      photo("a copy.jpg", row, digest="same")])
    [left] = result.left_out
    assert (left.index, left.kind, left.reason) == (2, LeftOutKind.DUPLICATE, "the same photo as a.jpg")
    assert result.used == (0, 1)
    assert result.probabilities == pytest.approx(geometric_mean(row, [0.5, 0.5]))  # a.jpg weighs once


def test_nothing_usable_is_a_clear_error_naming_every_photo():
    with pytest.raises(EmptyPlantError, match="No photos"):
        combine([])
    with pytest.raises(EmptyPlantError) as caught:
        combine([PlantPhoto("a.jpg", error="not an image"), PlantPhoto("b.jpg", error="the file is empty")])
    message = str(caught.value)
    assert "None of the 2 photos" in message and "a.jpg" in message and "b.jpg" in message
    assert "the file is empty" in message


def test_the_plants_group_is_the_most_shifted_of_its_photos():
    result = combine([photo("a", [0.6, 0.4], group=0), photo("b", [0.7, 0.3], group=2),
                      photo("c", [0.5, 0.5], group=1)])
    assert result.group == 2


@pytest.mark.parametrize("verdicts, expected", [
    ((SPECIES, SPECIES), SPECIES),
    ((SPECIES, UNKNOWN), SPECIES),  # a leaf beside the bloom: the bloom's word stands
    ((UNKNOWN, UNKNOWN, SPECIES), UNKNOWN),
    ((SMALL, SMALL), SMALL),
    ((SMALL, UNKNOWN), UNKNOWN),  # only the photos sharp enough to judge are counted
    ((SMALL, SPECIES, UNKNOWN), SPECIES),
    ((None, None), None),  # a model without a verdict rule
])
def test_the_verdict_comes_from_the_flower_photos(verdicts, expected):
    assert plant_verdict(verdicts) is expected
    rows = [[0.6, 0.4]] * len(verdicts)
    photos = [photo(f"{i}.jpg", row, verdict, digest=str(i)) for i, (row, verdict) in enumerate(zip(rows, verdicts))]
    assert combine(photos + [photo("dog.jpg", [0.1, 0.9], NOT_A_FLOWER)]).verdict is expected


def test_the_same_pixels_have_one_digest(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.bmp")  # another file and format, the same pixels
    other = pixels.copy()
    other[0, 0, 0] ^= 1
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.bmp") as b:
        assert pixel_digest(a.convert("RGB")) == pixel_digest(b.convert("RGB"))
    assert pixel_digest(Image.fromarray(other)) != pixel_digest(Image.fromarray(pixels))
    assert pixel_digest(Image.fromarray(pixels[:, :20])) != pixel_digest(Image.fromarray(pixels[:, 10:]))
    assert MAX_PHOTOS == 5


# ------------------------------------------------------------------------------------ calibration, synthetic

CLASSES, STRENGTH = 10, 1.6


def synthetic_plants(count: int, photos: int, shared: float, seed: int = 0):
    """Photos of plants whose right answer is known. Each photo's evidence is z = a e_y + sqrt(rho) s +
    sqrt(1 - rho) e with unit Gaussian noise shared (s, one per plant) and the photo's own (e): one photo's exact
    posterior is softmax(a z) (calibrated by construction), and n photos' is softmax(a sum z / tau*) with
    tau* = 1 + rho (n - 1): the product when photos are independent, the mean when they repeat each other.
    Returns (per-photo log-posteriors [count * photos, K], photo indices [count, photos], labels, tau*)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    plant = rng.normal(size=(count, 1, CLASSES))
    own = rng.normal(size=(count, photos, CLASSES))
    evidence = STRENGTH * np.eye(CLASSES)[labels][:, None, :] + np.sqrt(shared) * plant + np.sqrt(1 - shared) * own
    logits = STRENGTH * evidence.reshape(count * photos, CLASSES)
    log_posterior = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    return log_posterior, np.arange(count * photos).reshape(count, photos), labels, 1 + shared * (photos - 1)


def coverage(probabilities: np.ndarray, labels: np.ndarray, level: float) -> tuple[float, float]:
    """(how often the set holds the label, the probability mass the set claims) for APS sets (the prediction
    sets' score without the rank penalty) at ``level``. For calibrated probabilities the two agree: that is
    the coverage the sets are known to have."""
    sets = ConformalSets(level=level, qhat=level, penalty=0.0).sets(probabilities)
    held = np.mean([label in row for row, label in zip(sets, labels)])
    claimed = np.mean([probabilities[i, row].sum() for i, row in enumerate(sets)])
    return float(held), float(claimed)


def combined_rows(log_posterior, sets, tau):
    return np.stack([combine_probabilities(np.exp(log_posterior[row]), tau) for row in sets])


@pytest.mark.parametrize("shared", [0.0, 0.5, 1.0])
def test_the_fitted_set_temperature_recovers_the_known_one(shared):
    log_posterior, sets, labels, exact = synthetic_plants(6000, 3, shared)
    assert fit_set_temperature(log_posterior, sets, labels) == pytest.approx(exact, rel=0.15)


def test_combined_sets_cover_as_claimed_and_the_mean_never_falls_short():
    level = 0.9
    # one photo: calibrated by construction, so its sets hold the label as often as they claim
    single, _, labels1, _ = synthetic_plants(6000, 1, 0.0, seed=1)
    held, claimed = coverage(np.exp(single), labels1, level)
    assert held == pytest.approx(claimed, abs=0.015) and claimed > 0.8

    # photos of one plant that share half their noise: the exact set temperature for three photos is 2
    log_posterior, sets, labels, exact = synthetic_plants(6000, 3, 0.5, seed=2)
    held, claimed = coverage(combined_rows(log_posterior, sets, exact), labels, level)
    assert held == pytest.approx(claimed, abs=0.015)  # the right temperature: calibrated sets
    held, claimed = coverage(combined_rows(log_posterior, sets, 1.0), labels, level)
    assert held < claimed - 0.03  # the plain product is over-confident: its sets fall short of their claim
    held, claimed = coverage(combined_rows(log_posterior, sets, set_temperature(3)), labels, level)
    assert held >= claimed - 0.005  # the shipped rule (the mean) errs on the side of larger sets
    # and pooling helps: the combined top class is right more often than one photo's
    top1_single = np.mean(np.exp(single).argmax(1) == labels1)
    top1_combined = np.mean(combined_rows(log_posterior, sets, 3.0).argmax(1) == labels)
    assert top1_combined > top1_single + 0.05
