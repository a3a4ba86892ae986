"""The app's runtime: the lazily loaded model, torch threads and the environment's settings."""
from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Callable

import gradio as gr

ENV_CONCURRENCY = "FLOWERDEMO_CONCURRENCY"
ENV_QUEUE_SIZE = "FLOWERDEMO_QUEUE_SIZE"
ENV_MAX_FILE_SIZE = "FLOWERDEMO_MAX_FILE_SIZE"
DEFAULT_CONCURRENCY = 2  # inference requests run at once; the Space / dev box has 2 CPU cores
DEFAULT_QUEUE_SIZE = 32
DEFAULT_MAX_FILE_SIZE = "20mb"


class LazyModel:
    """Calls ``loader`` once, on first use, from whichever thread gets there first; failures are not cached
    (the next request tries again and reports the error again)."""

    def __init__(self, loader: Callable[[], Any]):
        self._loader = loader
        self._lock = threading.Lock()
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def __call__(self):
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._loader()
                model = self._model
        return model


def preload_in_background(model: "LazyModel", feedback_store=None) -> threading.Thread:
    """Load the model while the server starts, then open the feedback store (a ``LazyStore``, which needs the
    model's class names, and starts its uploads to a dataset repo if one is set); a failure is printed once and
    reported again to each request."""
    from ..core.artifact import ModelLoadError

    def load():
        try:
            model()
        except ModelLoadError as error:
            print(f"flowerdemo: the model could not be loaded: {error}", flush=True)
            return
        if feedback_store is not None:
            from ..feedback import FeedbackError

            try:
                feedback_store()
            except (FeedbackError, OSError) as error:
                print(f"flowerdemo: answers cannot be saved: {error}", flush=True)

    thread = threading.Thread(target=load, name="load-model", daemon=True)
    thread.start()
    return thread


def default_loader():
    """The bundled ``weights/``, or whatever ``FLOWERDEMO_MODEL`` (+ ``_REVISION``, ``_SHA256``) names; the model
    file is hashed here, once, so neither a saved answer nor the model panel hashes it again."""
    from ..serve.predict import FlowerClassifier

    configure_torch_threads()
    classifier = FlowerClassifier.load()
    model_sha256(classifier)
    return classifier


_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_DIGESTS_LOCK = threading.Lock()


def model_sha256(classifier) -> str | None:
    """The SHA-256 of the file the classifier was loaded from (``classifier.model_file``), computed once per
    classifier (under the lock, so two first callers do not both hash it); None for a classifier that did not
    come from a file, or whose file is gone."""
    from ..serve.hub import sha256_of

    with _DIGESTS_LOCK:
        if classifier not in _DIGESTS:
            path = getattr(classifier, "model_file", None)
            try:
                _DIGESTS[classifier] = sha256_of(path) if path and os.path.isfile(path) else None
            except OSError:
                _DIGESTS[classifier] = None
        return _DIGESTS[classifier]


def configure_torch_threads() -> int:
    """Share the cores between the requests that run at once: with 2 cores and 2 concurrent requests, 2 torch
    threads each made /classify 2.5-4x slower than 1 (benchmarks/bench_app.py). OMP_NUM_THREADS still wins."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // concurrency_limit())
    torch.set_num_threads(threads)
    return threads


def as_lazy(classifier_loader) -> LazyModel:
    if classifier_loader is None:
        return LazyModel(default_loader)
    if isinstance(classifier_loader, LazyModel):
        return classifier_loader
    if hasattr(classifier_loader, "explain") and not isinstance(classifier_loader, type):  # a loaded classifier
        return LazyModel(lambda: classifier_loader)
    if not callable(classifier_loader):
        raise TypeError("classifier_loader must be a FlowerClassifier or a callable returning one")
    return LazyModel(classifier_loader)


def get_model(model: LazyModel):
    from ..core.artifact import ModelLoadError

    try:
        return model()
    except ModelLoadError as error:
        raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable",
                       print_exception=False) from None


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def concurrency_limit() -> int:
    return env_int(ENV_CONCURRENCY, DEFAULT_CONCURRENCY)


def max_file_size() -> str | int:
    """``FLOWERDEMO_MAX_FILE_SIZE``: bytes (``20000000``) or Gradio's ``<n><unit>`` (``20mb``); default 20 MB."""
    raw = os.environ.get(ENV_MAX_FILE_SIZE, "").strip().lower().replace(" ", "")
    if not raw:
        return DEFAULT_MAX_FILE_SIZE
    if raw.isdigit():
        return int(raw)
    from .gradio_compat import parse_file_size

    try:
        parse_file_size(raw)
    except ValueError:
        raise ValueError(f"{ENV_MAX_FILE_SIZE} must be bytes or like 20mb, got {raw!r}") from None
    return raw
