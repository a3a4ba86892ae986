"""What the page says: pure functions from predictions and metadata to text (no Gradio state)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import gradio as gr

from ..core.names import display_name
from ..core.ranks import Rank
from ..core.verdict import Verdict
from ..serve.hub import BUNDLED_MODEL_DIR, sha256_of
from .assets import NOT_A_FLOWER_EXAMPLE
from .runtime import model_sha256

TOP_K = 5
CAM_CLASSES = 3
DEFAULT_OPACITY = 0.5
NEAREST_SHOWN = 3
TOO_SMALL_SHOWN = 5  # a photo too small to judge: at most this many best guesses in the verdict  # an unknown species: how many of the nearest known ones the verdict names
NOT_A_FLOWER_MESSAGE = "If it is a flower, try a closer photo of the bloom."
UNREADABLE_TITLE = "Cannot read this image"
NO_IMAGE_TITLE = "No image"
NO_IMAGE_MESSAGE = "Add a photo first: upload, drop, paste or take one with the webcam."
READY_MESSAGE = "**Add a photo** of one bloom: upload, drop, paste or take one, or pick an example."
DISCLAIMER = ("For curiosity and learning only. Never use it to decide whether a plant is edible, "
              "medicinal or safe to touch.")


def intro_markdown(metadata) -> str:
    """The heading and one line of what the app does; the number of species comes from the loaded model."""
    known = f"one of the {metadata.num_classes} species it knows" if metadata is not None else "its species"
    return (f"## Flower species recogniser\nName a flower in a photo ({known}), see where the model looked, and "
            "compare with a reference photo of each candidate. It also says when a photo is not a flower.")


def percent(probability: float) -> str:
    value = 100.0 * float(probability)
    if 0 < value < 0.1:
        return "<0.1%"
    return f"{value:.1f}%" if value < 99.95 else ">99.9%"


def verdict_markdown(prediction, set_level: float | None = None) -> str:
    """The answer above the label: a species, "one of" a few, a flower it does not know, or not a flower.
    ``set_level``: how often the model's prediction sets hold the right species (from its metadata)."""
    name, probability = prediction.top_k[0]
    name = display_name(name)
    if prediction.verdict is Verdict.NOT_A_FLOWER:
        looks_like = f"It looks like {_with_article(prediction.looks_like)}. " if prediction.looks_like else ""
        return (f"### Not a flower\n{looks_like}{NOT_A_FLOWER_MESSAGE}\n\n"
                f"The guesses below are **unlikely** to be right (best: {name}, {percent(probability)}).")
    if prediction.verdict is Verdict.UNKNOWN_SPECIES:
        nearest = ", ".join(display_name(n) for n, _ in prediction.top_k[:NEAREST_SHOWN])
        return ("### A flower I don't know\nIt looks like a flower, but far from every one of the species I was "
                f"trained on, so it is probably none of them.{_rank_hint(prediction)}\n\nNot it, but nearest: {nearest}.")
    if prediction.verdict is Verdict.TOO_SMALL:
        guesses = ", ".join([display_name(n) for n in prediction.prediction_set][:TOO_SMALL_SHOWN] or [name])
        return ("### Too small or blurry to tell well\nThe photo has too little detail to judge the species (or "
                "whether it is a flower) well: try a closer, sharper photo of one bloom.\n\n"
                f"Best guesses: {guesses} ({name} likeliest at {percent(probability)}).{_rank_hint(prediction)}")
    names = [shown_name(prediction, n) for n in prediction.prediction_set] or [name]
    ranked = ranked_answer_markdown(prediction, names, set_level)
    if ranked is not None:
        return ranked
    if len(names) == 1:
        text = f"### {name.capitalize()}\n{percent(probability)} likely (calibrated probability)."
    else:
        how_often = f"{set_level:.0%} of photos" if set_level else "most photos"
        text = (f"### One of: {', '.join(names)}\nNot sure which of these: together they hold the right species "
                f"in {how_often}; {name} is the "
                f"likeliest at {percent(probability)}. Compare the reference photos; a closer, sharper photo of one "
                "bloom helps.")
    if prediction.verdict is None:
        text += "\n\n*This model has no \"not a flower\" check: it names the closest of its classes for any photo.*"
    return text


RANK_WORDS = {Rank.GENUS: "genus", Rank.FAMILY: "family"}
SET_SHOWN = 8  # a set of dozens (a photo unlike the training photos) is summed up, not listed


def shown_name(prediction, class_name: str) -> str:
    """A class as the page names it: "common name (*Scientific name*)" where the model carries a taxonomy."""
    for (name, _), taxon in zip(prediction.top_k, prediction.taxa):
        if name == class_name:
            return taxon.display()
    return display_name(class_name)


def _rank_hint(prediction) -> str:
    """For a flower it does not know or a photo too small to judge: the genus or family it is sure of, if any."""
    answer = prediction.answer
    if answer is None or answer.rank not in RANK_WORDS or not prediction.taxa:
        return ""
    name = f"*{answer.scientific_name}*" if answer.name == answer.scientific_name else f"{answer.name} (*{answer.scientific_name}*)"
    return f" Its {RANK_WORDS[answer.rank]} is likely {name} ({percent(answer.probability)})."


def ranked_answer_markdown(prediction, set_names: list, set_level: float | None) -> str | None:
    """A species verdict told at the rank the model is sure of (models with a rank rule; None otherwise):
    the species, else its genus or family with the likeliest candidates in it, else "not sure" with the set
    (or, where the set is one species, the likeliest species with their probabilities). The set always holds
    the answer's likeliest species, so the two never contradict each other."""
    answer = prediction.answer
    if answer is None or not prediction.taxa or prediction.verdict is not Verdict.SPECIES:
        return None
    how_often = f"{set_level:.0%} of photos" if set_level else "most photos"
    listed = ", ".join(set_names[:SET_SHOWN]) + (f" and {len(set_names) - SET_SHOWN} more" if len(set_names) > SET_SHOWN else "")
    candidates = f"Candidates that hold the right species in {how_often}: {listed}."
    if len(set_names) < 2:
        # a set of one under an answer that is not sure of the species: the set only holds its likeliest class
        # because a set is never empty (no class cleared the set's threshold), so it proves nothing here; the
        # likeliest species with their probabilities say what the model does know
        likeliest = ", ".join(f"{shown_name(prediction, name)} {percent(p)}" for name, p in prediction.top_k[:NEAREST_SHOWN])
        candidates = f"Likeliest: {likeliest}."
    if answer.rank is Rank.SPECIES:
        taxon = prediction.taxa[0]
        text = f"### {taxon.common_name.capitalize()} (*{taxon.scientific_name}*)\n{percent(answer.probability)} likely."
        return text + (f"\n\n{candidates}" if len(set_names) > 1 else "")
    if answer.rank is not None:
        inside = [f"{display_name(name)} {percent(p)}" for (name, p), index in zip(prediction.top_k, prediction.class_indices)
                  if index in answer.classes][:NEAREST_SHOWN]
        title = (f"*{answer.scientific_name}*" if answer.name == answer.scientific_name
                 else f"{answer.name.capitalize()} (*{answer.scientific_name}*)")
        return (f"### {title}: not sure which species\nSure of the {RANK_WORDS[answer.rank]} "
                f"({percent(answer.probability)}), not of the species: {', '.join(inside)}.\n\n{candidates}")
    return (f"### Not sure\nNo species, genus or family is likely enough to name. {candidates} A closer, sharper "
            "photo of one bloom helps.")


def _with_article(thing: str) -> str:
    return f"{'an' if thing[:1].lower() in 'aeiou' else 'a'} {thing}"


def label_value(prediction) -> dict:
    """The top classes for the label component (plain text: it shows no Markdown)."""
    if prediction.taxa:
        return {f"{taxon.common_name} ({taxon.scientific_name})": float(probability)
                for (_, probability), taxon in zip(prediction.top_k, prediction.taxa)}
    return {display_name(name): float(probability) for name, probability in prediction.top_k}


def figures_html(figures, alt: str, inline: bool = False) -> str:
    """A grid of pictures with captions, as HTML: ``figures`` are (image URL, caption); captions are escaped
    (class names come from the model's metadata, which may come from anyone's Hub repo).

    ``inline``: the pictures are data URLs inside the answer. They are decoded with the frame that shows the
    answer (``decoding="sync"``, not lazily), rather than in later frames; linked pictures load lazily."""
    if not figures:
        return ""
    loading = 'decoding="sync"' if inline else 'loading="lazy"'
    items = "".join(f'<figure class="fd-figure"><img src="{html.escape(src, quote=True)}" '
                    f'alt="{html.escape(alt, quote=True)}: {html.escape(caption, quote=True)}" {loading}>'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>" for src, caption in figures)
    return f'<div class="fd-figures">{items}</div>'


def jpeg_data_url(image, quality: int = 85) -> str:
    """An image inline in the answer: the page shows it without another request, and API clients get no files
    to download (each download costs gradio_client a new HTTP connection)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def cam_caption(name: str, probability: float) -> str:
    return f"{display_name(name)} — {percent(probability)}"


def contrast_caption(first: str, second: str) -> str:
    first, second = display_name(first), display_name(second)
    return f"Why {first}, not {second}: where the evidence for it over {second} lies"


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


def example_label(path: Path) -> str:
    stem = path.stem
    if stem.startswith(NOT_A_FLOWER_EXAMPLE):
        thing = stem[len(NOT_A_FLOWER_EXAMPLE):].strip("_").replace("_", " ") or "photo"
        return f"{thing.capitalize()} (not a flower)"
    return stem.replace("_", " ").capitalize()


def _short_sha256(classifier, path: Path) -> str | None:
    """The first 12 hex digits of the model file's SHA-256: the digest taken at load (the one saved answers
    carry), else the file at ``path`` (a classifier built without ``load``)."""
    digest = model_sha256(classifier)
    if digest:
        return digest[:12]
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
        path = Path(source)
        bundled = path.exists() and path.resolve() in (BUNDLED_MODEL_DIR, BUNDLED_MODEL_DIR / "model.pt")
        where = "bundled `weights/`" if bundled else f"`{source}`"
        digest = _short_sha256(classifier, path) if path.exists() else None
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
    if meta.gate is None:
        lines = ["- \"Not a flower\" rule: none; every photo gets the closest of the known classes"]
    else:
        lines = [_not_a_flower_line(meta.gate, meta.metrics), _unknown_species_line(meta.gate, meta.metrics)]
    if meta.prediction_sets is not None:
        lines.append(_prediction_sets_line(meta.prediction_sets, meta.metrics))
    extra_ms, size_mb = _measured(meta.metrics, "cost", "imagenet_view_ms_median"), _measured(meta.metrics, "cost",
                                                                                              "model_megabytes")
    if extra_ms is not None and size_mb is not None:
        lines.append(f"- Cost of the ImageNet view: about {extra_ms:.0f} ms per photo on the exporting machine; "
                     f"model file {size_mb:.1f} MB")
    return lines


def _not_a_flower_line(gate, metrics) -> str:
    text = ("- \"Not a flower\": a frozen ImageNet network's view of the photo, combined with its distance to its "
            f"nearest training photos (k-NN, k = {gate.knn_k}); a photo ImageNet files as plant-like (a daisy, a pot, "
            "a bee) is rejected only if the k-NN distance agrees")
    nonflowers = _measured(metrics, "ood", "rule", "nonflowers_rejected")
    flowers = _measured(metrics, "ood", "rule", "flowers_rejected")
    if nonflowers is not None and flowers is not None:
        text += (f". Measured on held-out photos: rejects {percent(nonflowers)} of non-flowers and "
                 f"{percent(flowers)} of test flowers")
    parts = [(name, _measured(metrics, "ood", key, "auroc")) for name, key in
             (("k-NN", "knn"), ("ImageNet view", "imagenet"), ("combined", "combined"))]
    if all(value is not None for _, value in parts):
        text += " (AUROC " + ", ".join(f"{name} {value:.5f}" for name, value in parts) + ")"
    return text


def _unknown_species_line(gate, metrics) -> str:
    text = ("- \"A flower I don't know\": an accepted photo far from its nearest training photos (cosine "
            "distance) and whose likeliest species is unlikely, weighed together")
    unknown = Verdict.UNKNOWN_SPECIES.value  # the evaluator's metrics are keyed by the verdict's value
    left_out = _measured(metrics, unknown, "left_out", unknown)
    cost = _measured(metrics, unknown, "known_called_unknown")
    if left_out is not None and cost is not None:
        text += (f"; catches {percent(left_out)} of photos of species left out of those training photos, and "
                 f"says it of {percent(cost)} of known test flowers")
    return text


def _prediction_sets_line(sets, metrics) -> str:
    text = f"- \"One of these\": conformal prediction sets that hold the right species in {sets.level:.0%} of photos"
    coverage = _measured(metrics, "prediction_sets", "coverage")
    size = _measured(metrics, "prediction_sets", "mean_size")
    if coverage is not None and size is not None:
        text += f" (measured on test: {percent(coverage)}, {size:.2f} species per set on average)"
    return text
