"""The Gradio app: a thin adapter around :class:`flowerdemo.predict.FlowerClassifier`.

``build_demo()`` builds the Blocks without loading the model: the model is loaded lazily (once, thread-safe) by
the first request, or by the page-load event that fills the "About the model" panel. ``launch_kwargs()`` holds
what Gradio 6 takes at ``launch()`` (theme, css, upload limit), so ``app.py`` and the tests launch alike.

One API endpoint is public: ``/classify`` with inputs ``(image filepath, opacity float)``; its first output is the
top-k ``gr.Label``. Every other event is ``api_visibility="private"``.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from .preprocess import InvalidImageError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
REFERENCES_DIR = Path(__file__).resolve().parent / "assets" / "references"

TOP_K = 5
CAM_CLASSES = 3
DEFAULT_OPACITY = 0.5
NEAREST_SHOWN = 3  # an unknown species: how many of the nearest known ones the verdict names

ENV_CONCURRENCY = "FLOWERDEMO_CONCURRENCY"
ENV_QUEUE_SIZE = "FLOWERDEMO_QUEUE_SIZE"
ENV_MAX_FILE_SIZE = "FLOWERDEMO_MAX_FILE_SIZE"
DEFAULT_CONCURRENCY = 2  # inference requests run at once; the Space / dev box has 2 CPU cores
DEFAULT_QUEUE_SIZE = 32
DEFAULT_MAX_FILE_SIZE = "20mb"
CACHE_LIFETIME = (1800, 3600)  # Gradio's delete_cache: (sweep every N s, delete files older than M s)

UNREADABLE_TITLE = "Cannot read this image"
NO_IMAGE_TITLE = "No image"
NO_IMAGE_MESSAGE = "Add a photo first: upload, drop, paste or take one with the webcam."
READY_MESSAGE = "**Add a photo** of one bloom: upload, drop, paste or take one, or pick an example."
DISCLAIMER = ("For curiosity and learning only. Never use it to decide whether a plant is edible, "
              "medicinal or safe to touch.")

# Theme variables only, so light and dark mode both work; no fixed widths, so phones get one column.
CSS = """
.fd-unlikely { opacity: 0.65; }
.fd-note { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
.fd-verdict h3 { margin-top: 0; }
/* Galleries grow with their content instead of reserving Gradio's 320-450 px minimum, leave room for their
   label (which otherwise covers the top of small thumbnails), and their columns may shrink below Gradio's
   100 px so a phone shows every thumbnail (3 per row there) without clipping. */
.fd-gallery .grid-wrap { min-height: 0; padding-top: calc(var(--size-2) + 2.25rem); }
.fd-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)); }
.fd-gallery .caption-label { white-space: normal; font-size: var(--text-xs); }
@media (max-width: 480px) {
  #fd-references .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)); }
}
"""


# ----------------------------------------------------------------------------------------------------------------
# Model loading


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


def preload_in_background(model: "LazyModel") -> threading.Thread:
    """Load the model while the server starts; a failure is printed once and reported again to each request."""
    from .artifact import ModelLoadError

    def load():
        try:
            model()
        except ModelLoadError as error:
            print(f"flowerdemo: the model could not be loaded: {error}", flush=True)

    thread = threading.Thread(target=load, name="load-model", daemon=True)
    thread.start()
    return thread


def default_loader():
    """The bundled ``weights/``, or whatever ``FLOWERDEMO_MODEL`` (+ ``_REVISION``, ``_SHA256``) names."""
    from .predict import FlowerClassifier

    configure_torch_threads()
    return FlowerClassifier.load()


def configure_torch_threads() -> int:
    """Share the cores between the requests that run at once: with 2 cores and 2 concurrent requests, 2 torch
    threads each made /classify 2.5-4x slower than 1 (benchmarks/bench_app.py). OMP_NUM_THREADS still wins."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) // concurrency_limit())
    torch.set_num_threads(threads)
    return threads


def _as_lazy(classifier_loader) -> LazyModel:
    if classifier_loader is None:
        return LazyModel(default_loader)
    if isinstance(classifier_loader, LazyModel):
        return classifier_loader
    if hasattr(classifier_loader, "explain") and not isinstance(classifier_loader, type):  # a loaded classifier
        return LazyModel(lambda: classifier_loader)
    if not callable(classifier_loader):
        raise TypeError("classifier_loader must be a FlowerClassifier or a callable returning one")
    return LazyModel(classifier_loader)


def _get_model(model: LazyModel):
    from .artifact import ModelLoadError

    try:
        return model()
    except ModelLoadError as error:
        raise gr.Error(f"The model could not be loaded: {error}", title="Model unavailable",
                       print_exception=False) from None


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers (no Gradio state), unit-tested directly


def image_source(value: Any):
    """What ``load_image`` should open, from a Gradio image payload (``preprocess=False``), a path or a PIL image.

    Raises ``gr.Error`` when there is no image.
    """
    if value is None or value == "":
        raise gr.Error(NO_IMAGE_MESSAGE, title=NO_IMAGE_TITLE, print_exception=False)
    if isinstance(value, dict):
        if value.get("path"):
            return value["path"]
        url = value.get("url") or ""
        if url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (binascii.Error, ValueError):
                raise gr.Error("The pasted image data is not valid base64.", print_exception=False) from None
        raise gr.Error(NO_IMAGE_MESSAGE, title=NO_IMAGE_TITLE, print_exception=False)
    return value


def percent(probability: float) -> str:
    value = 100.0 * float(probability)
    if 0 < value < 0.1:
        return "<0.1%"
    return f"{value:.1f}%" if value < 99.95 else ">99.9%"


def verdict_markdown(prediction, set_level: float | None = None) -> str:
    """The answer above the label: a species, "one of" a few, a flower it does not know, or not a flower.
    ``set_level``: how often the model's prediction sets hold the right species (from its metadata)."""
    from .predict import NOT_A_FLOWER_MESSAGE

    name, probability = prediction.top_k[0]
    if prediction.verdict == "not_a_flower":
        looks_like = f"It looks like {_with_article(prediction.looks_like)}. " if prediction.looks_like else ""
        return (f"### Not a flower\n{looks_like}{NOT_A_FLOWER_MESSAGE}\n\n"
                f"The guesses below are **unlikely** to be right (best: {name}, {percent(probability)}).")
    if prediction.verdict == "unknown_species":
        nearest = ", ".join(n for n, _ in prediction.top_k[:NEAREST_SHOWN])
        return ("### A flower I don't know\nIt looks like a flower, but far from every one of the species I was "
                f"trained on, so it is probably none of them.\n\nNot it, but nearest: {nearest}.")
    names = list(prediction.prediction_set) or [name]
    if len(names) == 1:
        text = f"### {name.capitalize()}\n{percent(probability)} likely (calibrated probability)."
    else:
        text = (f"### One of: {', '.join(names)}\nThese hold the right species in "
                f"{f'{set_level:.0%} of photos' if set_level else 'most photos'}; {name} is the likeliest at {percent(probability)}. "
                "Compare the reference photos; a closer, sharper photo of one bloom helps.")
    if prediction.verdict is None:
        text += "\n\n*This model has no \"not a flower\" check: it names the closest of its classes for any photo.*"
    return text


def _with_article(thing: str) -> str:
    return f"{'an' if thing[:1].lower() in 'aeiou' else 'a'} {thing}"


def label_value(prediction) -> dict:
    return {name: float(probability) for name, probability in prediction.top_k}


def cam_caption(name: str, probability: float) -> str:
    return f"{name} — {percent(probability)}"


@dataclass(frozen=True)
class ResultState:
    """What the page keeps of its last answer (per browser session, in ``gr.State``): enough to re-render the
    heatmaps at another opacity and to style the label, without running the model again."""

    view: Any  # PIL image: the centre crop the model saw
    heatmaps: Any  # [K, h, w] in [0, 1]
    captions: tuple
    verdict: str | None
    classes: int
    references: bool


def render_overlays(state: ResultState | None, opacity: float) -> list:
    """Gallery items (overlay image, caption) for the stored Grad-CAM maps at this opacity."""
    from .gradcam import overlay

    if not state:
        return []
    opacity = min(1.0, max(0.0, float(opacity)))
    return [(cache_image(overlay(state.view, heatmap, opacity)), caption)
            for heatmap, caption in zip(state.heatmaps, state.captions)]


def cache_image(image, cache_dir: str | None = None) -> str:
    """Write an image into Gradio's cache, atomically, and return its path.

    Gradio 6.31 saves returned PIL images to a content-hashed path with a plain ``write_bytes``: two requests
    for the same photo rewrite the same file while a client may be downloading it, and that client gets a short
    read (seen once in 500 requests of benchmarks/load_test.py). A path already in the cache is served as is
    (and still swept by ``delete_cache``), so write it under a temporary name and rename it into place.
    """
    import hashlib
    import io
    import tempfile

    from gradio.utils import get_upload_folder

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    folder = Path(cache_dir or get_upload_folder()) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "gradcam.jpg"
    if target.exists():
        os.utime(target)  # delete_cache ages files by time: a re-used copy must not expire on its first schedule
    else:
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".gradcam.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(staging, target)
    return str(target)


@functools.lru_cache(maxsize=None)
def reference_index(folder: str = str(REFERENCES_DIR)) -> dict:
    """class name -> thumbnail path, from ``index.json`` (written by scripts/make_reference_thumbnails.py)."""
    index_file = Path(folder) / "index.json"
    try:
        raw = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    index = {}
    for name, file in raw.items():
        path = Path(folder) / str(file)
        if path.is_file():
            index[name] = str(path)
    return index


def reference_items(names) -> list:
    """(thumbnail, caption) for each class that has a bundled training-set photo; others are left out."""
    index = reference_index()
    return [(index[name], f"{rank}. {name}") for rank, name in enumerate(names, 1) if name in index]


def example_files(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """Flowers first (alphabetical), then the "not a flower" photos."""
    files = [p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    return sorted(files, key=lambda p: (p.stem.startswith("not_a_flower"), p.stem))


def example_label(path: Path) -> str:
    stem = path.stem
    if stem.startswith("not_a_flower"):
        thing = stem[len("not_a_flower"):].strip("_").replace("_", " ") or "photo"
        return f"{thing.capitalize()} (not a flower)"
    return stem.replace("_", " ").capitalize()


def _short_sha256(path: Path) -> str | None:
    from .hub import sha256_of

    file = path / "model.pt" if path.is_dir() else path
    try:
        return sha256_of(file)[:12] if file.is_file() else None
    except OSError:
        return None


def model_markdown(classifier, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES) -> str:
    """The "About the model" panel: where it came from, what it knows, how well it did, how it decides."""
    meta = classifier.metadata
    source = str(getattr(classifier, "source", "") or "unknown")
    lines = [f"**Model** `{meta.arch}` — **{meta.num_classes} classes**", ""]
    if source.startswith("hf://"):
        repo, _, revision = source[len("hf://"):].partition("@")
        lines.append(f"- Source: Hugging Face Hub `{repo}`, revision `{revision or 'main'}`")
    else:
        from .hub import BUNDLED_MODEL_DIR

        path = Path(source)
        bundled = path.exists() and path.resolve() in (BUNDLED_MODEL_DIR, BUNDLED_MODEL_DIR / "model.pt")
        where = "bundled `weights/`" if bundled else f"`{source}`"
        digest = _short_sha256(path) if path.exists() else None
        lines.append(f"- Source: {where}" + (f", file SHA-256 `{digest}…`" if digest else ""))
    if meta.flowerdemo_version:
        lines.append(f"- Exported with flowerdemo {meta.flowerdemo_version}")
    test = meta.metrics.get("test") if isinstance(meta.metrics, dict) else None
    if isinstance(test, dict) and isinstance(test.get("top1"), (int, float)):
        text = f"- Measured test accuracy: top-1 **{percent(test['top1'])}**"
        if isinstance(test.get("top5"), (int, float)):
            text += f", top-5 {percent(test['top5'])}"
        if isinstance(test.get("images"), int):
            text += f" on {test['images']:,} held-out test images"
        lines.append(text)
    else:
        lines.append("- Measured test accuracy: not recorded in this model's metadata")
    if meta.test_time_augmentation == "hflip_mean":
        lines.append("- Looks at each photo and its mirror image, and averages the two")
    lines.append(f"- Calibration: probabilities are softmax(logits / T) with temperature T = {meta.temperature:.3g}")
    lines += verdict_rule_lines(meta)
    lines.append(f"- Shows the top {top_k} classes; Grad-CAM heatmaps for the top {cam_classes}")
    return "\n".join(lines)


def _measured(metrics, *keys):
    """metrics[k1][k2]... when it is a number, else None (old or third-party metadata may lack any of it)."""
    value = metrics
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verdict_rule_lines(meta) -> list[str]:
    """How the model decides "not a flower", "a flower I don't know" and "one of these", with what was measured."""
    metrics, gate, lines = meta.metrics, meta.gate, []
    if gate is None:
        lines.append("- \"Not a flower\" rule: none; every photo gets the closest of the known classes")
    else:
        text = (f"- \"Not a flower\": a frozen ImageNet network's view of the photo, combined with its distance to "
                f"its nearest training photos (k-NN, k = {gate.knn_k}); a photo ImageNet files as plant-like (a daisy, a pot, "
                "a bee) is rejected only if the k-NN distance agrees")
        rule_nonflowers, rule_flowers = _measured(metrics, "ood", "rule", "nonflowers_rejected"), _measured(metrics, "ood", "rule", "flowers_rejected")
        if rule_nonflowers is not None and rule_flowers is not None:
            text += (f". Measured on held-out photos: rejects {percent(rule_nonflowers)} of non-flowers and "
                     f"{percent(rule_flowers)} of test flowers")
        parts = [(name, _measured(metrics, "ood", key, "auroc")) for name, key in
                 (("k-NN", "knn"), ("ImageNet view", "imagenet"), ("combined", "combined"))]
        if all(value is not None for _, value in parts):
            text += " (AUROC " + ", ".join(f"{name} {value:.4f}" for name, value in parts) + ")"
        lines.append(text)
        text = (f"- \"A flower I don't know\": an accepted photo farther than {gate.unknown_threshold:.3f} (cosine) "
                "from its nearest training photos")
        left_out, cost = _measured(metrics, "unknown_species", "left_out", "unknown_species"), _measured(metrics, "unknown_species", "known_called_unknown")
        if left_out is not None and cost is not None:
            text += (f"; catches {percent(left_out)} of photos of species left out of those training photos, and "
                     f"says it of {percent(cost)} of known test flowers")
        lines.append(text)
    if meta.prediction_sets is not None:
        text = (f"- \"One of these\": conformal prediction sets that hold the right species in "
                f"{meta.prediction_sets.level:.0%} of photos")
        coverage, size = _measured(metrics, "prediction_sets", "coverage"), _measured(metrics, "prediction_sets", "mean_size")
        if coverage is not None and size is not None:
            text += f" (measured on test: {percent(coverage)}, {size:.2f} species per set on average)"
        lines.append(text)
    extra_ms, size_mb = _measured(metrics, "cost", "imagenet_view_ms_median"), _measured(metrics, "cost", "model_megabytes")
    if extra_ms is not None and size_mb is not None:
        lines.append(f"- Cost of the ImageNet view: about {extra_ms:.0f} ms per photo on the exporting machine; "
                     f"model file {size_mb:.1f} MB")
    return lines


# ----------------------------------------------------------------------------------------------------------------
# Event adapters


def make_classify(model: LazyModel, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES):
    """The ``/classify`` callback: (image, opacity) -> (label, verdict, Grad-CAM gallery, references, state).

    It returns plain values (no component updates), so API clients get the top-k label as their first output;
    the label's "unlikely" styling is applied by :func:`label_style` in a private follow-up event.
    """

    def classify(image, opacity: float = DEFAULT_OPACITY):
        """Name the flower in a photo: the top classes with calibrated probabilities, a verdict, Grad-CAM
        overlays for the top 3 classes, and a training-set reference photo of each top class."""
        source = image_source(image)
        try:
            opacity = DEFAULT_OPACITY if opacity is None else float(opacity)
        except (TypeError, ValueError):
            raise gr.Error(f"opacity must be a number in [0, 1], got {opacity!r}", print_exception=False) from None
        if not 0.0 <= opacity <= 1.0:
            raise gr.Error(f"opacity must be in [0, 1], got {opacity}", print_exception=False)
        classifier = _get_model(model)
        try:
            explanation = classifier.explain(source, top_k=top_k, cam_classes=cam_classes)
        except InvalidImageError as error:
            raise gr.Error(str(error), title=UNREADABLE_TITLE, print_exception=False) from None
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        prediction = explanation.prediction
        sets = getattr(getattr(classifier, "metadata", None), "prediction_sets", None)
        references = reference_items([name for name, _ in prediction.top_k])
        state = ResultState(
            view=explanation.view,
            heatmaps=explanation.heatmaps,
            captions=tuple(cam_caption(name, p) for name, p in prediction.top_k[:len(explanation.heatmaps)]),
            verdict=prediction.verdict,
            classes=len(prediction.top_k),
            references=bool(references),
        )
        return (label_value(prediction), verdict_markdown(prediction, sets.level if sets else None),
                render_overlays(state, opacity), references, state)

    return classify


def label_style(state: "ResultState | None") -> tuple:
    """Updates (label, references) that mark a rejected photo's guesses as unlikely (and an unknown species'
    as only the nearest), and hide an empty reference row (a model whose classes have no bundled photos)."""
    if not state:
        return (gr.update(label="Top classes", elem_classes=[]), gr.update(visible=True))
    count = state.classes
    if state.verdict == "not_a_flower":
        label = gr.update(label=f"Top {count} guesses — unlikely: not a flower", elem_classes=["fd-unlikely"])
    elif state.verdict == "unknown_species":
        label = gr.update(label=f"Nearest {count} known species — probably none of them", elem_classes=["fd-unlikely"])
    else:
        label = gr.update(label=f"Top {count} classes", elem_classes=[])
    return label, gr.update(visible=state.references)


def error_markdown(error: gr.Error) -> str:
    """What went wrong and what to do, for the verdict area (the page shows no stale answer beside it)."""
    title = getattr(error, "title", None) or "Something went wrong"
    if title == UNREADABLE_TITLE:
        advice = "Try another photo: a JPEG, PNG, WebP, GIF, BMP or TIFF file of one bloom."
    elif title == NO_IMAGE_TITLE:
        advice = ""
    else:
        advice = "Try again in a moment, or with another photo."
    return f"### {title}\n{error.message}" + (f"\n\n{advice}" if advice else "")


def make_auto_classify(classify):
    """The page's own event (Identify, upload, paste, webcam, example click): classify and style in one step, so
    a rejected photo's guesses are never shown unmarked. A cleared or failed input clears every result panel
    and the verdict area says why and what to do (no stale answer, no error toast over the next result)."""

    def cleared(message: str) -> tuple:
        label, references = label_style(None)
        return (gr.update(value=None, **_props(label)), message, [], gr.update(value=[], **_props(references)),
                None)

    def auto_classify(image, opacity):
        if image is None or image == "":
            return cleared(READY_MESSAGE)
        try:
            value, verdict, overlays, items, state = classify(image, opacity)
        except gr.Error as error:
            return cleared(error_markdown(error))
        label, references = label_style(state)
        return (gr.update(value=value, **_props(label)), verdict, overlays,
                gr.update(value=items, **_props(references)), state)

    return auto_classify


def _props(update: dict) -> dict:
    return {key: value for key, value in update.items() if key != "__type__"}


def make_model_info(model: LazyModel, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES):
    """The page-load event filling the model panel. The panel hashes the 18 MB model file, and it cannot change
    while the same classifier is loaded, so it is rendered once per classifier rather than on every page load."""
    rendered: dict = {}

    def model_info():
        try:
            classifier = _get_model(model)
        except gr.Error as error:
            return f"**The model could not be loaded.** {error.message}"
        if rendered.get("classifier") is not classifier:
            rendered.update(classifier=classifier, text=model_markdown(classifier, top_k, cam_classes))
        return rendered["text"]

    return model_info


def rerender(state, opacity):
    if not state:
        return gr.skip()
    return render_overlays(state, opacity)


# ----------------------------------------------------------------------------------------------------------------
# Building and launching


def _env_int(name: str, default: int, minimum: int = 1) -> int:
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
    return _env_int(ENV_CONCURRENCY, DEFAULT_CONCURRENCY)


def max_file_size() -> str | int:
    """``FLOWERDEMO_MAX_FILE_SIZE``: bytes (``20000000``) or Gradio's ``<n><unit>`` (``20mb``); default 20 MB."""
    raw = os.environ.get(ENV_MAX_FILE_SIZE, "").strip().lower().replace(" ", "")
    if not raw:
        return DEFAULT_MAX_FILE_SIZE
    if raw.isdigit():
        return int(raw)
    from gradio.utils import _parse_file_size

    try:
        _parse_file_size(raw)
    except ValueError:
        raise ValueError(f"{ENV_MAX_FILE_SIZE} must be bytes or like 20mb, got {raw!r}") from None
    return raw


def theme():
    # Soft ships its font locally (no Google Fonts request), and has light and dark palettes.
    return gr.themes.Soft(primary_hue="emerald", secondary_hue="pink", neutral_hue="slate")


def launch_kwargs(**overrides) -> dict:
    """Keyword arguments for ``demo.launch()`` (Gradio 6 takes theme and css here, not in ``gr.Blocks``).

    Server name and port are left to Gradio, which reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.
    """
    kwargs = {"theme": theme(), "css": CSS, "max_file_size": max_file_size(), "show_error": False}
    kwargs.update(overrides)
    return kwargs


def build_demo(classifier_loader=None, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES) -> gr.Blocks:
    """Build the app. ``classifier_loader``: a callable returning a ``FlowerClassifier`` (called lazily, once),
    a loaded classifier, or None for ``FlowerClassifier.load()`` (bundled weights or ``FLOWERDEMO_MODEL``)."""
    model = _as_lazy(classifier_loader)
    classify = make_classify(model, top_k, cam_classes)

    # delete_cache: every 30 min, delete uploads and outputs older than 1 h from Gradio's cache (examples are kept).
    with gr.Blocks(title="Flower species recogniser", analytics_enabled=False, delete_cache=CACHE_LIFETIME) as demo:
        gr.Markdown("## Flower species recogniser\nName one of the 102 Oxford Flowers-102 species in a photo, "
                    "see where the model looked, and compare with a reference photo of each candidate.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(label="Flower photo", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard", "webcam"], height=300, elem_id="fd-image")
                identify = gr.Button("Identify", variant="primary", elem_id="fd-identify")
                files = example_files()
                examples = gr.Examples(examples=[[str(p)] for p in files], inputs=[image],
                                       example_labels=[example_label(p) for p in files], label="Examples",
                                       examples_per_page=12, cache_examples=False,
                                       api_visibility="private") if files else None
            with gr.Column(scale=1, min_width=300):
                verdict = gr.Markdown(READY_MESSAGE, label="Verdict", elem_id="fd-verdict", elem_classes=["fd-verdict"])
                # No big heading: the verdict above already names the top class (or says it is not a flower).
                label = gr.Label(num_top_classes=top_k, label="Top classes", show_heading=False, elem_id="fd-label")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                cams = gr.Gallery(label="Grad-CAM: where the model looked", columns=cam_classes,
                                  object_fit="contain", elem_id="fd-cams", elem_classes=["fd-gallery"],
                                  format="jpeg", interactive=False)
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                    elem_id="fd-opacity")
            with gr.Column(scale=1, min_width=300):
                references = gr.Gallery(label="Reference photos (training set)", columns=top_k, object_fit="cover",
                                        elem_id="fd-references", elem_classes=["fd-gallery"], interactive=False)
        with gr.Accordion("About the model", open=False):
            info = gr.Markdown("Loading the model…", elem_id="fd-model-info")
        gr.Markdown(f"<span class='fd-note'>{DISCLAIMER} Uploaded photos are deleted from the server's "
                    "temporary cache within about 90 minutes.</span>")
        state = gr.State(None)

        # The public API's own trigger, never shown: /classify raises gr.Error for bad input (what an API client
        # wants), while the page's events below turn errors into a message in the verdict area instead.
        api_trigger = gr.Button(visible=False, elem_id="fd-api")

        outputs = [label, verdict, cams, references, state]
        # preprocess=False: the callback gets Gradio's file payload and opens it itself, so an unreadable upload
        # gets flowerdemo's message (Gradio's own preprocessing would fail first with a generic error).
        api_trigger.click(classify, inputs=[image, opacity], outputs=outputs, api_name="classify", preprocess=False,
                          concurrency_id="model")
        # A new photo runs the model by itself. Not image.change: Gradio 6.31 fires that twice when an upload
        # replaces a photo. image.input fires once per upload, paste, webcam capture or clear; an example click
        # only sets the value, so it gets its own follow-up event.
        auto = dict(fn=make_auto_classify(classify), inputs=[image, opacity], outputs=outputs, preprocess=False,
                    api_visibility="private", concurrency_id="model")
        identify.click(**auto)
        image.input(**auto)
        if examples is not None:
            examples.load_input_event.then(**auto)
        opacity.change(rerender, inputs=[state, opacity], outputs=[cams], api_visibility="private",
                       show_progress="hidden", concurrency_id="overlay")
        demo.load(make_model_info(model, top_k, cam_classes), outputs=[info], api_visibility="private",
                  show_progress="hidden")

    demo.queue(default_concurrency_limit=concurrency_limit(), max_size=_env_int(ENV_QUEUE_SIZE, DEFAULT_QUEUE_SIZE))
    demo.flowerdemo_model = model  # for tests and callers: demo.flowerdemo_model.loaded
    return demo
