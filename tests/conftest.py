"""Shared fixtures: a tiny but real exported artifact, built offline in seconds."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Gradio names cached files by content hash and a closing app deletes the files it created, so apps in other
# processes sharing /tmp/gradio would lose theirs (403s): every test session gets its own cache.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="flowerdemo-gradio-"))

TINY_CLASSES = ("pink primrose", "sunflower", "rose")
TINY_IMAGENET = ("beagle", "daisy", "toaster", "pot", "tabby")  # a 5-class stand-in for the ImageNet view


class TinyImageNetView(torch.nn.Module):
    """A small random network in the ImageNet view's place: the artifact contract is only 'images -> logits'."""

    def __init__(self, classes: int = len(TINY_IMAGENET)):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def tiny_gate(imagenet_classes: int = len(TINY_IMAGENET), **overrides):
    from flowerdemo.core.gate import FlowerGate

    values = dict(knn_k=3, imagenet_weights=tuple([0.5] * imagenet_classes), knn_weight=4.0, bias=-1.0,
                  reject_threshold=0.0, knn_reject_threshold=0.9, unknown_threshold=0.8, plant_like=(1, 3))
    values.update(overrides)
    return FlowerGate(**values)


def build_tiny_artifact(folder: Path, class_names=TINY_CLASSES, with_gate: bool = True, seed: int = 0) -> Path:
    """A randomly initialised EfficientNet-Lite0 exported exactly like the real model (metadata, k-NN bank,
    verdict rule, prediction sets, mirror averaging), with a tiny network as its ImageNet view."""
    from flowerdemo import __version__
    from flowerdemo.core.artifact import MODEL_FILE, ModelMetadata
    from flowerdemo.core.conformal import ConformalSets
    from flowerdemo.training.scripting import save_model, script_model
    from flowerdemo.training.models import create_model
    from flowerdemo.core.gate import normalize
    from flowerdemo.core.preprocess import PreprocessConfig

    torch.manual_seed(seed)
    backbone = create_model("tf_efficientnet_lite0", len(class_names), pretrained=False).eval()
    bank = normalize(torch.randn(16, backbone.num_features))
    metadata = ModelMetadata(
        class_names=tuple(class_names), preprocess=PreprocessConfig(), arch="tf_efficientnet_lite0",
        temperature=1.5, gate=tiny_gate() if with_gate else None, imagenet_class_names=TINY_IMAGENET,
        prediction_sets=ConformalSets(level=0.9, qhat=0.8, penalty=0.01, k_reg=1, calibration_images=30),
        metrics={"test": {"top1": 0.5}}, training_args={"epochs": 0}, flowerdemo_version=__version__,
        test_time_augmentation="hflip_mean",
    )
    folder.mkdir(parents=True, exist_ok=True)
    scripted = script_model(backbone, TinyImageNetView().eval(), bank, torch.arange(16) % len(class_names),
                            mirror_average=True)
    save_model(scripted, metadata, folder / MODEL_FILE)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny inputs: one thread is as fast, and on a busy 2-core machine several times faster."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def classifier(tiny_model_dir):
    """The tiny artifact loaded through the app's own loader."""
    from flowerdemo.serve.predict import FlowerClassifier

    return FlowerClassifier.load(str(tiny_model_dir))


CLASSES = ("daisy", "rose", "tulip")  # the tiny ImageFolder tree's classes
COLOURS = {"daisy": (250, 250, 240), "rose": (200, 20, 40), "tulip": (250, 200, 30)}


def write_image_tree(root: Path, counts=(("train", 4), ("val", 2), ("test", 2))) -> Path:
    """A tiny ImageFolder tree (root/<split>/<class>/N.jpg: one colour per class, plus noise) and root/nonflowers/."""
    rng = np.random.default_rng(0)
    for split, count in counts:
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                noise = rng.integers(-40, 40, size=(80, 96, 3))
                pixels = np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    others = root / "nonflowers"
    others.mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, size=(70, 90, 3), dtype=np.uint8)).save(others / f"{index}.jpg")
    return root
