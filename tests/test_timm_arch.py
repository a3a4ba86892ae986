"""Any timm CNN: a tiny timm ConvNeXt trained from a LOCAL ImageNet weights file through timm's own pretrained
loading (``pretrained_cfg_overlay=dict(file=...)``), its preprocessing taken from its pretrained config, exported
with the same contract as the bundled model; token-feature and non-ImageNet-1k architectures refused clearly."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from PIL import Image

from conftest import CLASSES, write_image_tree
from flowerdemo.training import export, train
from flowerdemo.core.artifact import load_artifact
from flowerdemo.training.models import PretrainedWeightsError, create_model
from flowerdemo.serve.predict import FlowerClassifier

pytestmark = pytest.mark.slow  # trains, exports or spawns processes: not for day-to-day runs

ARCH = "test_convnext"  # timm's 0.3 M-parameter ConvNeXt: 160 px, bicubic, mean = std = 0.5, crop_pct 0.95


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A stand-in for downloaded ImageNet weights: the architecture with its 1,000-class head, seeded."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = timm.create_model(ARCH, pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model.eval()


@pytest.fixture(scope="module")
def convnext_run(imagenet_file, tmp_path_factory):
    root = write_image_tree(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run")
    train.main(train.get_args_parser().parse_args([
        "--arch", ARCH, "--pretrained-file", str(imagenet_file[0]), "--dataset", "imagefolder", "--data-path",
        str(root), "--output-dir", str(out), "--epochs", "1", "--batch-size", "4", "--workers", "0",
        "--freeze-stages", "1"]))
    return root, out


def test_preprocessing_comes_from_the_pretrained_config(convnext_run):
    _, out = convnext_run
    recipe = torch.load(out / "checkpoint.pth", weights_only=True)["recipe"]
    assert recipe["arch"] == ARCH
    assert recipe["preprocess"] == {"resize": math.floor(160 / 0.95), "crop": 160, "mean": [0.5] * 3,
                                    "std": [0.5] * 3, "interpolation": "bicubic"}
    assert recipe["train_crop"] == 136  # the bundled recipe's 192/224 ratio, to a multiple of 8


def test_weights_came_from_the_local_file_through_timm(imagenet_file, convnext_run):
    _, out = convnext_run
    source_state = imagenet_file[1].state_dict()
    trained = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    # the stem and stage 1 were frozen (--freeze-stages 1): still exactly the file's ImageNet weights
    assert torch.equal(trained["stem.0.weight"], source_state["stem.0.weight"])
    assert torch.equal(trained["stages.0.blocks.0.conv_dw.weight"], source_state["stages.0.blocks.0.conv_dw.weight"])
    assert not torch.equal(trained["stages.3.blocks.0.conv_dw.weight"], source_state["stages.3.blocks.0.conv_dw.weight"])
    assert trained["head.fc.weight"].shape == (len(CLASSES), 64)  # a new head for the flowers


@pytest.fixture(scope="module")
def convnext_model(imagenet_file, convnext_run, tmp_path_factory):
    root, out = convnext_run
    folder = tmp_path_factory.mktemp("model")
    export.main(export.get_args_parser().parse_args([
        "--checkpoint", str(out / "model_best.pth"), "--output", str(folder), "--dataset", "imagefolder",
        "--data-path", str(root), "--nonflowers-path", str(root / "nonflowers"), "--pretrained-file",
        str(imagenet_file[0]), "--workers", "0", "--knn-k", "2", "--accept", "0.9"]))
    return folder


def test_export_keeps_the_app_contract_for_a_timm_convnext(imagenet_file, convnext_model):
    module, metadata = load_artifact(convnext_model / "model.pt")
    assert metadata.arch == ARCH and metadata.preprocess.crop == 160 and metadata.preprocess.interpolation == "bicubic"
    assert metadata.training_args["arch"] == ARCH and len(metadata.imagenet_class_names) == 1000
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        features = module.features(x)
        assert features.shape[:2] == (2, 64) and features.ndim == 4
        torch.testing.assert_close(module(x), module.head(features))
        # the ImageNet view is the same architecture with its pretrained 1,000-class head (stored in fp16)
        torch.testing.assert_close(module.imagenet_logits(x), imagenet_file[1](x), rtol=0.05, atol=0.05)


def test_the_app_explains_a_timm_convnext(convnext_model, convnext_run):
    root, _ = convnext_run
    classifier = FlowerClassifier.load(str(convnext_model))
    explanation = classifier.explain(Image.open(next((root / "test" / "rose").iterdir())), cam_classes=2)
    assert explanation.prediction.verdict in ("species", "unknown_species", "not_a_flower")
    assert explanation.heatmaps.shape[0] == 2 and explanation.heatmaps.max() <= 1.0
    assert explanation.view.size == (160, 160)
    card = (convnext_model / "README.md").read_text()
    assert f"`{ARCH}`'s ImageNet weights" in card and "- test-convnext" in card


def test_token_feature_architectures_are_refused(tmp_path, capsys):
    root = write_image_tree(tmp_path / "data", counts=(("train", 1), ("val", 1)))
    assert train.cli(["--arch", "test_vit", "--no-pretrained", "--dataset", "imagefolder", "--data-path", str(root),
                      "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "forward_features gives shape [1, 101, 64]" in error and "token-feature" in error and "convnext" in error
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_a_pretrained_head_that_is_not_imagenet_1k_is_refused(tmp_path, capsys):
    root = write_image_tree(tmp_path / "data", counts=(("train", 1), ("val", 1)))
    assert train.cli(["--arch", "convnext_nano.in12k", "--no-pretrained", "--dataset", "imagefolder", "--data-path",
                      str(root), "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "11821 classes (imagenet-12k)" in error and "not ImageNet-1k's 1,000" in error


def test_missing_weights_offline_say_how_to_get_them():
    with pytest.raises(PretrainedWeightsError, match="Hugging Face Hub or its local cache.*--pretrained-file"):
        create_model(ARCH, 3, pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="from the file /nowhere/w.safetensors"):
        create_model(ARCH, 3, pretrained=True, pretrained_file="/nowhere/w.safetensors")
