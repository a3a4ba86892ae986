"""The typed training recipe: validation, plain-type round trip, older flowerdemos' arguments, resume checks."""
from __future__ import annotations

import io

import pytest
import torch

from flowerdemo.core.preprocess import PreprocessConfig
from flowerdemo.training.recipe import Recipe, RecipeError, RunOptions


def recipe(**overrides) -> Recipe:
    return Recipe(**{"arch": "tf_efficientnet_lite0", "preprocess": PreprocessConfig(), **overrides})


def test_recipe_round_trips_through_a_weights_only_checkpoint():
    original = recipe(epochs=50, model_ema_decay=0.998, class_balance="loss", limit_per_class=3, probe_l2=0.01,
                      probe_extra_data=("elsewhere", "webflowers"))
    buffer = io.BytesIO()
    torch.save({"recipe": original.to_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["recipe"]  # plain types only, or this raises
    assert Recipe.from_dict(loaded) == original
    assert loaded["preprocess"] == PreprocessConfig().to_dict()


def test_recipe_holds_no_run_options():
    recipe_fields, run_fields = set(recipe().to_dict()), set(RunOptions().__dataclass_fields__)
    assert not recipe_fields & run_fields
    assert {"data_path", "output_dir", "resume", "init_from", "pretrained_file", "workers", "device"} <= run_fields


@pytest.mark.parametrize("overrides, message", [
    ({"augment": "autoaugment"}, "augment must be one of trivialaugment, colorjitter, none; got 'autoaugment'"),
    ({"class_balance": "oversample"}, "class_balance must be one of none, sampler, loss; got 'oversample'"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"val_fraction_for_training": 1.0}, r"val_fraction_for_training must be in \[0, 1\)"),
    ({"freeze_stages": -1}, "freeze_stages must be >= 0"),
    ({"probe_l2": 0.0}, "probe_l2 must be a positive number or unset"),
])
def test_invalid_recipes_name_the_valid_choices(overrides, message):
    with pytest.raises(RecipeError, match=message):
        recipe(**overrides)


def test_unknown_fields_are_refused_and_legacy_arguments_lose_their_paths():
    with pytest.raises(RecipeError, match="unknown recipe fields data_path"):
        Recipe.from_dict({**recipe().to_dict(), "data_path": "/home/someone/data"})
    legacy = {"arch": "tf_efficientnet_lite0", "data_path": "/home/someone/flowers", "output_dir": "runs/x",
              "workers": 8, "device": "cuda", "epochs": 50, "no_pretrained": False, "train_crop": 192}
    converted = Recipe.from_legacy_args(legacy, PreprocessConfig())
    assert converted.epochs == 50 and converted.pretrained and converted.train_crop == 192
    assert not any(str(value).startswith("/") for value in converted.to_dict().values())


def test_a_recipe_from_before_the_probe_loads_as_never_probed():
    older = {key: value for key, value in recipe().to_dict().items() if not key.startswith("probe_")}
    loaded = Recipe.from_dict(older)
    assert loaded.probe_l2 is None and loaded.probe_extra_data == ()


def test_resume_allows_only_more_epochs():
    stored = recipe(epochs=10)
    stored.check_resume(recipe(epochs=20), "ckpt")  # extending a run is fine
    with pytest.raises(RecipeError, match=r"--class-balance: 'none' in the checkpoint, 'loss' now; --seed: 0 in the checkpoint, 1 now"):
        stored.check_resume(recipe(epochs=10, seed=1, class_balance="loss"), "ckpt")
    with pytest.raises(RecipeError, match=r"--arch \(its pretrained preprocessing\)"):
        stored.check_resume(recipe(epochs=10, preprocess=PreprocessConfig(crop=192)), "ckpt")
    with pytest.raises(RecipeError, match="may grow on resume, not shrink"):
        stored.check_resume(recipe(epochs=5), "ckpt")


def test_checkpoints_with_pickled_objects_or_missing_files_are_refused(tmp_path, capsys):
    import argparse

    from flowerdemo.training import checkpoints, train

    torch.save({"args": argparse.Namespace(lr=0.1), "model": {}}, tmp_path / "old.pth")  # an object, not plain data
    with pytest.raises(checkpoints.CheckpointError, match="is not a flowerdemo checkpoint of plain tensors and values"):
        checkpoints.load_checkpoint(tmp_path / "old.pth")
    assert train.cli(["--resume", str(tmp_path / "missing.pth")]) == 2
    assert capsys.readouterr().err.strip() == f"train: error: checkpoint not found: {tmp_path / 'missing.pth'}"
