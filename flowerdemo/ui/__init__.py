"""The Gradio app: a thin adapter around :class:`flowerdemo.serve.predict.FlowerClassifier`.

- ``runtime``: the lazily loaded model (once, thread-safe; failures not cached), torch threads.
- ``presenters``: pure functions from predictions and metadata to the page's text.
- ``assets``: the examples and the per-class reference thumbnails.
- ``gradio_compat``: every workaround for, or reach into, Gradio internals (one file to touch on an upgrade).
- ``events``: the callbacks (``/classify``, the page's own new-photo event, opacity, the model panel).
- ``plant``: several photos of one plant: the ``/classify_plant`` callback and what the page says of a plant.
- ``feedback``: the "Is this right?" row's words and callbacks (saves go to ``flowerdemo.feedback``).
- ``layout``: ``build_demo()`` (layout, wiring, queue) and ``launch_kwargs()`` (what Gradio 6 takes at
  ``launch()``: theme, css, upload limit), so ``app.py`` and the tests launch alike.

Every setting comes in as one :class:`flowerdemo.serve.settings.Settings` (``build_demo(settings=...)``,
``launch_kwargs(settings)``; None: ``Settings.from_env()``); no module here reads the environment.

Three API endpoints are public: ``/classify`` with inputs ``(image filepath, opacity float)``, whose first output
is the top-k ``gr.Label``; ``/classify_plant`` ``(list of 1-5 files, opacity float)``, the same outputs for one
plant (bad files are named in the verdict; only a set with no usable photo is an error); and ``/feedback``
``(label, label_kind)``, which saves the session's last answer (absent with ``FLOWERDEMO_FEEDBACK=off``).
Every other event is ``api_visibility="private"``.
"""
from ..serve.settings import (DEFAULT_CONCURRENCY, DEFAULT_MAX_FILE_SIZE, DEFAULT_QUEUE_SIZE, ENV_CONCURRENCY,
                              ENV_MAX_FILE_SIZE, ENV_QUEUE_SIZE, Settings, SettingsError)
from .assets import EXAMPLES_DIR, REFERENCES_DIR, example_files, reference_index, reference_items
from .events import (ResultState, image_source, label_style, make_auto_classify, make_classify, make_model_info,
                     references_html, render_overlays, rerender)
from .layout import CACHE_LIFETIME, CSS, build_demo, launch_kwargs, theme
from .plant import make_classify_plant, plant_verdict_markdown
from .presenters import (CAM_CLASSES, DEFAULT_OPACITY, DISCLAIMER, NO_IMAGE_MESSAGE, READY_MESSAGE, TOP_K,
                         _with_article, cam_caption, error_markdown, example_label, label_value, model_markdown,
                         percent, verdict_markdown)
from .runtime import LazyModel, configure_torch_threads, default_loader, preload_in_background

__all__ = [
    "CACHE_LIFETIME", "CAM_CLASSES", "CSS", "DEFAULT_CONCURRENCY", "DEFAULT_MAX_FILE_SIZE", "DEFAULT_OPACITY",
    "DEFAULT_QUEUE_SIZE", "DISCLAIMER", "ENV_CONCURRENCY", "ENV_MAX_FILE_SIZE", "ENV_QUEUE_SIZE", "EXAMPLES_DIR",
    "LazyModel", "NO_IMAGE_MESSAGE", "READY_MESSAGE", "REFERENCES_DIR", "ResultState", "TOP_K", "_with_article",
    "Settings", "SettingsError", "build_demo", "cam_caption", "configure_torch_threads", "default_loader",
    "error_markdown", "example_files", "example_label", "image_source", "label_style", "label_value",
    "launch_kwargs", "make_auto_classify", "make_classify", "make_classify_plant", "make_model_info", "model_markdown",
    "percent", "plant_verdict_markdown", "preload_in_background", "reference_index", "reference_items", "references_html", "render_overlays", "rerender",
    "theme", "verdict_markdown",
]
