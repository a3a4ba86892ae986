"""Training for the photos people take: the photo augmentations, --extra-data and its class balance, and the
split of photos from elsewhere (nothing trained on is calibrated or reported on)."""
from __future__ import annotations

import csv
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from flowerdemo.core.preprocess import PreprocessConfig, train_transform
from flowerdemo.training.augment import Degrade, Grayscale, Squash, ZoomOut, photo_steps
from flowerdemo.training.data import Sample
from flowerdemo.training.field import FieldSplit, extra_training_samples, field_part, read_field_labels
from flowerdemo.training.recipe import Recipe, RecipeError
from flowerdemo.training.loaders import DistributedWeightedSampler, balanced_sample_weights


def noise_photo(width=96, height=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def roughness(image: Image.Image) -> float:
    """Mean absolute difference between horizontal neighbours: high for fine detail, low once blurred."""
    pixels = np.asarray(image, dtype=np.float64)
    return float(np.abs(np.diff(pixels, axis=1)).mean())


# ------------------------------------------------------------------------------------------------ augmentations


@pytest.mark.parametrize("step", [ZoomOut(p=1.0), Degrade(p_downscale=1.0, p_blur=1.0, p_jpeg=1.0), Grayscale(p=1.0)],
                         ids=["zoom_out", "degrade", "grayscale"])
def test_each_photo_step_keeps_size_and_mode_and_changes_the_photo(step):
    random.seed(1)
    photo = noise_photo()
    out = step(photo)
    assert out.size == photo.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(photo))


def test_steps_with_zero_probability_return_the_photo_untouched():
    photo = noise_photo()
    for step in (Squash(p=0.0), ZoomOut(p=0.0), Degrade(p_downscale=0.0, p_blur=0.0, p_jpeg=0.0), Grayscale(p=0.0)):
        assert np.array_equal(np.asarray(step(photo)), np.asarray(photo))


def test_squash_shortens_exactly_one_side_within_its_range():
    photo = noise_photo(200, 100)
    for seed in range(20):
        random.seed(seed)
        width, height = Squash(p=1.0, low=0.65)(photo).size
        assert (width == 200) != (height == 100)  # one side changed, the other kept
        assert 0.64 <= min(width / 200, height / 100) < 1.0


def test_zoom_out_puts_the_shrunken_photo_inside_a_mirrored_border():
    photo = noise_photo(80, 80)
    random.seed(3)
    out = np.asarray(ZoomOut(p=1.0, low=0.5, high=0.5)(photo))
    small = np.asarray(photo.resize((40, 40), Image.BILINEAR))
    # Somewhere in the output sits the 40x40 copy, untouched: find it by its top-left pixel run.
    found = [(top, left) for top in range(41) for left in range(41) if np.array_equal(out[top:top + 40, left:left + 40], small)]
    assert len(found) == 1


def test_downscaling_to_64_px_removes_fine_detail_as_a_thumbnail_does():
    photo = noise_photo(192, 192)
    soft = Degrade(p_downscale=1.0, min_side=64, max_side=64, p_blur=0.0, p_jpeg=0.0)(photo)
    assert soft.size == photo.size
    assert roughness(soft) < 0.5 * roughness(photo)


def test_grayscale_gives_three_equal_channels():
    out = np.asarray(Grayscale(p=1.0)(noise_photo()))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_training_transform_with_photo_steps_gives_a_normalised_crop():
    config = PreprocessConfig()
    before, after = photo_steps()
    transform = train_transform(config, 96, 0.25, "trivialaugment", before, after)
    torch.manual_seed(0)
    random.seed(0)
    for seed in range(5):
        x = transform(noise_photo(150, 120, seed))
        assert x.shape == (3, 96, 96) and x.dtype == torch.float32
        low = (0 - max(config.mean)) / min(config.std)
        high = (1 - min(config.mean)) / min(config.std)
        assert low - 1e-4 <= float(x.min()) and float(x.max()) <= high + 1e-4


# ------------------------------------------------------------------------------------------------ class balance


def test_balanced_sampler_draws_every_class_and_every_collection_in_it_evenly():
    # class 0: 20 Flowers-102 photos and 700 extra web photos; class 1: 20 Flowers-102 photos only
    labels = [0] * 20 + [0] * 700 + [1] * 20
    sources = ["main"] * 20 + ["elsewhere"] * 700 + ["main"] * 20
    weights = balanced_sample_weights(labels, sources, 2)
    sampler = DistributedWeightedSampler(weights, seed=0)
    draws = []
    for epoch in range(60):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    per_class = Counter(labels[i] for i in draws)
    per_pair = Counter((labels[i], sources[i]) for i in draws)
    total = len(draws)
    assert abs(per_class[0] / total - 0.5) < 0.02 and abs(per_class[1] / total - 0.5) < 0.02
    assert abs(per_pair[(0, "main")] / total - 0.25) < 0.02
    assert abs(per_pair[(0, "elsewhere")] / total - 0.25) < 0.02


# ------------------------------------------------------------------------------------------------ --extra-data


def write_elsewhere(folder, rows):
    (folder / "images").mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "source", "kind", "class_name", "accept"])
        for index, (kind, name, accept) in enumerate(rows):
            filename = f"{kind}_{index:04d}.jpg"
            noise_photo(32, 32, index).save(folder / "images" / filename)
            writer.writerow([filename, "web", kind, name, accept])


def test_extra_data_trains_only_on_known_photos_in_the_training_share(tmp_path):
    rows = ([("known", "rose", "rose")] * 40 + [("loose", "daisy", "oxeye daisy")] * 20
            + [("loose", "iris", "bearded iris|yellow iris")] * 20 + [("unknown", "snowdrop", "")] * 20)
    write_elsewhere(tmp_path / "web", rows)
    classes = ["rose", "oxeye daisy", "bearded iris", "yellow iris"]
    split = FieldSplit(0.5, 0.2)
    samples = extra_training_samples([tmp_path / "web"], classes, split)
    every = read_field_labels(tmp_path / "web")
    expected = {s.path for s in every if split.part(s.path) == "train" and s.kind in ("known", "loose")
                and len(s.accept) == 1}
    assert {s.path for s in samples} == expected and 20 < len(expected) < 60
    assert {classes[s.label] for s in samples} == {"rose", "oxeye daisy"}  # never an ambiguous iris or a snowdrop
    assert all(s.source == "web/web" for s in samples)
    # nothing trained on is in the calibration or the reported share
    held_out = {s.path for part in ("calibration", "test") for s in field_part(every, split, part)}
    assert held_out and not held_out & {s.path for s in samples}


def test_extra_data_class_folders_must_be_the_models_classes(tmp_path):
    (tmp_path / "extra" / "tulip").mkdir(parents=True)
    noise_photo().save(tmp_path / "extra" / "tulip" / "a.jpg")
    from flowerdemo.training.data import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="tulip"):
        extra_training_samples([tmp_path / "extra"], ["rose"], FieldSplit())


def test_field_split_is_fixed_by_file_name_and_shares_as_asked():
    split = FieldSplit(0.5, 0.2)
    names = [f"photo_{i}.jpg" for i in range(4000)]
    parts = Counter(split.part(name) for name in names)
    assert abs(parts["train"] / 4000 - 0.5) < 0.03 and abs(parts["calibration"] / 4000 - 0.2) < 0.03
    # the folder does not matter, only the name: the trainer and the evaluator agree wherever the data lives
    assert all(split.part(f"/a/{n}") == split.part(f"b/c/{n}") for n in names[:50])


def test_recipe_refuses_a_field_split_without_test_photos():
    with pytest.raises(RecipeError, match="keeps no test photos"):
        Recipe(arch="tf_efficientnet_lite0", preprocess=PreprocessConfig(), field_train_fraction=0.8,
               field_calibration_fraction=0.2)


def test_recipe_records_extra_data_names_not_paths():
    from flowerdemo.training.recipe import extra_data_name

    assert extra_data_name("/home/someone/data/elsewhere/") == "elsewhere"
    recipe = Recipe(arch="tf_efficientnet_lite0", preprocess=PreprocessConfig(), extra_data=("elsewhere",))
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Sample("x", 1).source == "main"


# ------------------------------------------------------------------------------------------------ WiSE-FT


def test_wise_interpolation_mixes_float_weights_and_keeps_the_fine_tunes_counters():
    from flowerdemo.training.wise import WiseError, interpolate

    start = {"w": torch.zeros(2, 2), "bn.num_batches_tracked": torch.tensor(3)}
    tuned = {"w": torch.full((2, 2), 4.0), "bn.num_batches_tracked": torch.tensor(9)}
    assert torch.equal(interpolate(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(interpolate(start, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(interpolate(start, tuned, 0.25)["w"], torch.full((2, 2), 1.0))
    assert int(interpolate(start, tuned, 0.25)["bn.num_batches_tracked"]) == 9
    with pytest.raises(WiseError, match="same layers"):
        interpolate({"w": torch.zeros(1)}, {"v": torch.zeros(1)}, 0.5)
    with pytest.raises(WiseError, match=r"\[2, 2\] in --start"):
        interpolate({"w": torch.zeros(2, 2)}, {"w": torch.zeros(3)}, 0.5)


def test_wise_chooses_the_best_mean_and_breaks_ties_towards_the_fine_tune():
    from flowerdemo.training.wise import SelectionSet, choose_alpha

    assert choose_alpha({0.0: {"mean": 0.7}, 0.5: {"mean": 0.8}, 1.0: {"mean": 0.75}}) == 0.5
    assert choose_alpha({0.5: {"mean": 0.8}, 0.75: {"mean": 0.8}}) == 0.75
    selection = SelectionSet("web", torch.zeros(3, 3, 2, 2), ((0,), (1, 2), (1,)))
    logits = np.array([[5.0, 0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    assert selection.top1(logits) == pytest.approx(2 / 3)  # any accepted name is right


def test_calibration_pool_never_holds_a_photo_trained_on_or_reported_on(tmp_path):
    from flowerdemo.training.field import field_calibration_rows

    rows = [("known", "rose", "rose")] * 60 + [("unknown", "snowdrop", "")] * 60
    write_elsewhere(tmp_path / "web", rows)
    recipe = Recipe(arch="tf_efficientnet_lite0", preprocess=PreprocessConfig())
    split = recipe.field_split
    pool = {row.path for row in field_calibration_rows([tmp_path / "web"], recipe.field_split)}
    trained_on = {s.path for s in extra_training_samples([tmp_path / "web"], ["rose"], split)}
    reported_on = {s.path for s in field_part(read_field_labels(tmp_path / "web"), split, "test")}
    assert pool and trained_on and reported_on
    assert not pool & trained_on and not pool & reported_on
    # the unknown species of the training share are never trained on, so they may calibrate
    unknown_untrained = {s.path for s in read_field_labels(tmp_path / "web")
                         if s.kind == "unknown" and split.part(s.path) == "train"}
    assert unknown_untrained and unknown_untrained <= pool
