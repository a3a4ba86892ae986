"""The ImageNet view beside the species network: same answers, a second thread only for a lone request."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from flowerdemo.serve.predict import FlowerClassifier


class RecordingModule:
    """The classifier's network, noting which thread ran the ImageNet view."""

    def __init__(self, module):
        self._module = module
        self.imagenet_threads: list[str] = []

    def __getattr__(self, name):
        return getattr(self._module, name)

    def imagenet_logits(self, batch):
        self.imagenet_threads.append(threading.current_thread().name)
        return self._module.imagenet_logits(batch)


@pytest.fixture
def recording(tiny_model_dir):
    classifier = FlowerClassifier.load(str(tiny_model_dir), parallel_views=True)
    classifier.module = RecordingModule(classifier.module)
    return classifier


def test_parallel_views_give_the_same_answers(tiny_model_dir, recording):
    sequential = FlowerClassifier.load(str(tiny_model_dir), parallel_views=False)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (64 + 8 * i, 80, 3), dtype=np.uint8) for i in range(4)]
    together, apart = recording.predict_batch(photos), sequential.predict_batch(photos)
    assert [p.to_dict() for p in together] == [p.to_dict() for p in apart]
    assert recording.module.imagenet_threads[0].startswith("flowerdemo-imagenet-view")


def test_a_lone_request_uses_the_second_thread_and_a_busy_server_does_not(recording):
    photo = np.full((64, 64, 3), 200, dtype=np.uint8)
    recording.explain(photo)
    assert recording.module.imagenet_threads[-1].startswith("flowerdemo-imagenet-view")
    recording._running = 1  # another request is in its forward passes
    try:
        recording.explain(photo)
    finally:
        recording._running = 0
    assert recording.module.imagenet_threads[-1] == threading.current_thread().name
    recording.parallel_views = False
    recording.explain(photo)
    assert recording.module.imagenet_threads[-1] == threading.current_thread().name


def test_automatic_choice_follows_torch_threads(tiny_model_dir, monkeypatch):
    import torch

    classifier = FlowerClassifier.load(str(tiny_model_dir))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert classifier._use_parallel_views()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not classifier._use_parallel_views()
