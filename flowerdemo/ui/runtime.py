"""The app's runtime: the lazily loaded model and torch threads, as the :class:`Settings` ask."""
from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Any, Callable

import gradio as gr

from ..core.model_file import ModelLoadError
from ..feedback import FeedbackError
from ..serve import hub
from ..serve.settings import Settings


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

    def load():
        try:
            model()
        except ModelLoadError as error:
            print(f"flowerdemo: the model could not be loaded: {error}", flush=True)
            return
        if feedback_store is not None:
            try:
                feedback_store()
            except (FeedbackError, OSError) as error:
                print(f"flowerdemo: answers cannot be saved: {error}", flush=True)

    thread = threading.Thread(target=load, name="load-model", daemon=True)
    thread.start()
    return thread


def default_loader(settings: Settings | None = None):
    """The model the settings name (``FLOWERDEMO_MODEL`` + ``_REVISION``, ``_SHA256``; None: the environment's),
    else the bundled ``weights/``; the model file is hashed here, once, so neither a saved answer nor the model
    panel hashes it again."""
    from ..serve.predict import FlowerClassifier  # here: importing the app must not load the model code

    settings = settings if settings is not None else Settings.from_env()
    configure_torch_threads(settings)
    classifier = FlowerClassifier.load(settings.model or str(hub.BUNDLED_MODEL_DIR), revision=settings.model_revision,
                                       sha256=settings.model_sha256)
    model_sha256(classifier)
    return classifier


_DIGESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_DIGESTS_LOCK = threading.Lock()


def model_sha256(classifier) -> str | None:
    """The SHA-256 of the file the classifier was loaded from (``classifier.model_file``), computed once per
    classifier (under the lock, so two first callers do not both hash it); None for a classifier that did not
    come from a file, or whose file is gone."""
    with _DIGESTS_LOCK:
        if classifier not in _DIGESTS:
            path = getattr(classifier, "model_file", None)
            try:
                _DIGESTS[classifier] = hub.sha256_of(path) if path and os.path.isfile(path) else None
            except OSError:
                _DIGESTS[classifier] = None
        return _DIGESTS[classifier]


def configure_torch_threads(settings: Settings) -> int:
    """Share the cores between the requests that run at once: with 2 cores and 2 concurrent requests, 2 torch
    threads each made /classify 2.5-4x slower than 1 (benchmarks/bench_app.py). OMP_NUM_THREADS still wins."""
    import torch

    if settings.omp_num_threads:
        return torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // settings.concurrency)
    torch.set_num_threads(threads)
    return threads


def as_lazy(classifier_loader, settings: Settings | None = None) -> LazyModel:
    """``classifier_loader`` as a :class:`LazyModel`; None: :func:`default_loader` with these settings."""
    if classifier_loader is None:
        return LazyModel(functools.partial(default_loader, settings))
    if isinstance(classifier_loader, LazyModel):
        return classifier_loader
    if hasattr(classifier_loader, "explain") and not isinstance(classifier_loader, type):  # a loaded classifier
        return LazyModel(lambda: classifier_loader)
    if not callable(classifier_loader):
        raise TypeError("classifier_loader must be a FlowerClassifier or a callable returning one")
    return LazyModel(classifier_loader)


def get_model(model: LazyModel):
    try:
        return model()
    except ModelLoadError as error:
        raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable",
                       print_exception=False) from None
