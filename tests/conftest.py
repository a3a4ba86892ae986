"""Shared fixtures: a tiny but real exported artifact, built offline in seconds."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# Gradio names cached files by content hash and a closing app deletes the files it created, so apps in other
# processes sharing /tmp/gradio would lose theirs (403s): every test session gets its own cache.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="flowerdemo-gradio-"))

TINY_CLASSES = ("pink primrose", "sunflower", "rose")


def build_tiny_artifact(folder: Path, class_names=TINY_CLASSES, with_bank: bool = True, seed: int = 0) -> Path:
    """A randomly initialised EfficientNet-Lite0 exported exactly like the real model (metadata, OOD bank,
    mirror averaging)."""
    from flowerdemo import __version__
    from flowerdemo.artifact import MODEL_FILE, ModelMetadata, OODRule, save_artifact
    from flowerdemo.export import script_model
    from flowerdemo.models import create_model
    from flowerdemo.ood import normalize
    from flowerdemo.preprocess import PreprocessConfig

    torch.manual_seed(seed)
    backbone = create_model("tf_efficientnet_lite0", len(class_names), pretrained=False).eval()
    bank = normalize(torch.randn(16, backbone.num_features)) if with_bank else None
    metadata = ModelMetadata(
        class_names=tuple(class_names), preprocess=PreprocessConfig(), arch="tf_efficientnet_lite0",
        temperature=1.5, ood=OODRule("knn_cosine", 0.9, 3) if with_bank else OODRule("energy", 0.0),
        metrics={"test": {"top1": 0.5}}, training_args={"epochs": 0}, flowerdemo_version=__version__,
        test_time_augmentation="hflip_mean",
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_artifact(script_model(backbone, bank, mirror_average=True), metadata, folder / MODEL_FILE)
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
    from flowerdemo.predict import FlowerClassifier

    return FlowerClassifier.load(str(tiny_model_dir))
