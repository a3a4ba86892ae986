"""Turn trained weights into a self-describing model folder (a Hugging Face model repo, as is).

    python -m flowerdemo.training.export --checkpoint runs/lite0/model_best.pth --nonflowers-path NONFLOWERS --output weights
    python -m flowerdemo.training.export --from-model weights --nonflowers-path NONFLOWERS --output weights-v2   # upgrade

Steps, each a function below: load the weights (a trainer checkpoint, or an earlier artifact's own network);
recompute the trained layers' BatchNorm statistics on the training images at the eval transform (checkpoints
only); add the frozen ImageNet network as the "what else could it be" view; collect outputs on the k-NN bank
(training images), val (never trained on) and the calibration non-flowers; calibrate (temperature, then
conformal prediction sets on the calibrated probabilities); fit the verdict rule (:class:`~flowerdemo.core.verdict.
FlowerGate`); assemble the metadata; save; verify by evaluating the test split and the held-out non-flowers
with the app's own loading code; write ``metrics.json``, plots and the model card.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..core.artifact import (METADATA_FILE, MODEL_FILE, ModelLoadError, ModelMetadata, load_artifact, quiet_torchscript,
                       save_artifact)
from .calibration import fit_temperature
from ..core.conformal import ConformalSets
from .fitting.conformal import fit_conformal, select_penalty
from .data import DataSource, DatasetLayoutError, add_data_arguments, nonflower_photos, training_and_selection_samples
from .engine import Outputs
from .metrics import roc_auc, softmax
from ..core.verdict import FlowerGate, knn_distance, log_softmax_np, normalize, plant_like_indices
from .fitting.gate import fit_logistic, out_of_fold_scores, threshold_at_acceptance, threshold_with_widest_margin
from .models import IMAGENET_CLASSES, ArchitectureError, PretrainedWeightsError
from ..core.preprocess import PreprocessConfig
from .recipe import Recipe, RecipeError
from .train import CheckpointError

BANK_DTYPE = torch.float16  # halves the bank's share of model.pt; cosine similarity does not need more
IMAGENET_VIEW_DTYPE = torch.float16  # the frozen ImageNet copy is stored in half precision (model.pt <= 32 MB)
L2_CANDIDATES = (0.001, 0.01, 0.1, 1.0)
BANK_EXTRA_PER_CLASS = 40  # photos from elsewhere per species in the k-NN bank (model.pt <= 32 MB)


class ExportError(RuntimeError):
    """The weights or the data cannot make a model folder; the message says what to change."""


class FlowerNet(nn.Module):
    """What gets scripted: ``forward == head(features(x))``, the k-NN feature bank (and each bank image's class)
    as buffers, and ``imagenet_logits(x)``: the frozen ImageNet network's 1,000 logits for the same input."""

    __constants__ = ["mirror_average"]  # a scripted constant: the unused branch compiles away

    def __init__(self, backbone: nn.Module, imagenet: nn.Module, ood_bank: torch.Tensor | None = None,
                 bank_labels: torch.Tensor | None = None, mirror_average: bool = False):
        super().__init__()
        self.backbone = backbone
        self.imagenet = imagenet
        self.mirror_average = mirror_average
        width = backbone.num_features
        bank = ood_bank.to(BANK_DTYPE) if ood_bank is not None else torch.zeros(0, width, dtype=BANK_DTYPE)
        labels = bank_labels if bank_labels is not None else torch.zeros(len(bank), dtype=torch.int64)
        if len(labels) != len(bank):
            raise ValueError(f"the bank has {len(bank)} rows but {len(labels)} labels")
        self.register_buffer("ood_bank", bank)
        self.register_buffer("ood_bank_labels", labels.to(torch.int16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised images -> last feature map [B, C, h, w] (Grad-CAM's layer).

        With ``mirror_average`` the map is the mean of the photo's map and its mirror image's map flipped back,
        so both describe the same positions: Grad-CAM still points at the right place, and because the head
        is a pool and a linear layer, the logits are exactly the mean of the two views' logits.
        """
        if not self.mirror_average:
            return self.backbone.forward_features(x)
        # Two passes, not one batch of 2B: on a 2-core CPU, batch 1 twice took 19 ms against 26 ms for a batch of 2.
        plain = self.backbone.forward_features(x)
        mirrored = self.backbone.forward_features(x.flip(3)).flip(3)
        return 0.5 * (plain + mirrored)

    @torch.jit.export
    def head(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits [B, num_classes] (global pool, classifier)."""
        return self.backbone.forward_head(feature_map)

    @torch.jit.export
    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalised images -> the frozen ImageNet network's logits [B, 1000] (one view, no mirror)."""
        return self.imagenet(x)


def script_model(backbone: nn.Module, imagenet: nn.Module, ood_bank: torch.Tensor | None = None,
                 bank_labels: torch.Tensor | None = None, mirror_average: bool = False) -> torch.jit.ScriptModule:
    network = FlowerNet(backbone.eval(), imagenet.eval(), ood_bank, bank_labels, mirror_average).eval()
    try:
        with quiet_torchscript():
            return torch.jit.script(network)
    except (RuntimeError, torch.jit.frontend.FrontendError) as error:
        raise ExportError(f"this architecture cannot be scripted to TorchScript, which the app loads "
                          f"({str(error).splitlines()[0][:300]}); choose another timm CNN") from None


@torch.no_grad()
def check_contract(scripted: torch.jit.ScriptModule, crop: int) -> None:
    """What the app, Grad-CAM and the verdict rule rely on, whatever the architecture: ``features`` is a
    [B, C, H, W] map, ``forward == head(features)``, and the ImageNet view gives 1,000 logits."""
    x = torch.randn(2, 3, crop, crop)
    features = scripted.features(x)
    if features.ndim != 4:
        raise ExportError(f"features() gives shape {list(features.shape)}; the app needs a [B, C, H, W] map")
    if not torch.allclose(scripted(x), scripted.head(features), rtol=1e-4, atol=1e-4):
        raise ExportError("forward(x) differs from head(features(x)); Grad-CAM would explain another network")
    width = scripted.imagenet_logits(x).shape[-1]
    if width != IMAGENET_CLASSES:
        raise ExportError(f"the ImageNet view gives {width} logits, not ImageNet-1k's {IMAGENET_CLASSES}")


def round_to_storage_precision(imagenet: nn.Module) -> nn.Module:
    """The ImageNet view as it will compute after the half-precision round trip of ``model.pt``, so every
    threshold is fitted on exactly the numbers the app will see."""
    return imagenet.to(IMAGENET_VIEW_DTYPE).float().eval()


def save_model(scripted: torch.jit.ScriptModule, metadata: ModelMetadata, path: Path) -> None:
    """Save with the ImageNet view in half precision (the loader brings it back to float32)."""
    scripted.imagenet.to(IMAGENET_VIEW_DTYPE)
    try:
        save_artifact(scripted, metadata, path)
    finally:
        scripted.imagenet.float()


# ------------------------------------------------------------------------------------------------ load the weights


@dataclass
class Source:
    """The trained network and what the exporter needs to know about it."""

    backbone: nn.Module
    class_names: list
    recipe: Recipe
    epoch: int  # selected epoch, 1-based (-1 unknown)
    batchnorm: dict  # already recalibrated? (an artifact's own record)
    mirror_average: bool | None = None  # what an earlier artifact did; None for checkpoints

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.recipe.preprocess


def stored_recipe(data: dict, preprocess: PreprocessConfig | None = None) -> Recipe:
    """The recipe a checkpoint or an artifact carries; an older flowerdemo's training arguments (with run
    options and machine paths in them) are reduced to their recipe fields."""
    try:
        return Recipe.from_dict(data)
    except (RecipeError, TypeError):
        if preprocess is None:
            raise
        return Recipe.from_legacy_args(data, preprocess)


def build_backbone(recipe: Recipe, num_classes: int, state: dict) -> nn.Module:
    """The trained network, rebuilt scriptable (timm swaps in TorchScript-friendly layers) with its weights."""
    from .models import create_model

    backbone = create_model(recipe.arch, num_classes, pretrained=False, scriptable=True)
    backbone.load_state_dict(state)
    return backbone.eval()


def load_checkpoint_backbone(path: str | Path) -> tuple[nn.Module, list, Recipe, dict]:
    """(backbone, class_names, recipe, raw checkpoint) from a trainer checkpoint (read with weights_only=True)."""
    from .train import load_checkpoint

    checkpoint = load_checkpoint(path)
    class_names = list(checkpoint["class_names"])
    if "recipe" in checkpoint:
        recipe = Recipe.from_dict(checkpoint["recipe"])
    else:  # an older trainer's checkpoint: all arguments under "args", the preprocessing beside them
        recipe = Recipe.from_legacy_args(checkpoint["args"], PreprocessConfig.from_dict(checkpoint["preprocess"]))
    return build_backbone(recipe, len(class_names), checkpoint["model"]), class_names, recipe, checkpoint


def source_from_checkpoint(path: str | Path) -> Source:
    backbone, class_names, recipe, checkpoint = load_checkpoint_backbone(path)
    return Source(backbone, class_names, recipe, checkpoint.get("epoch", -2) + 1, {"recalibrated": False})


def source_from_model(path: str | Path) -> Source:
    """The network inside an earlier artifact (any format version), to re-export it with this flowerdemo.

    Read without ``load_artifact``'s checks on purpose: upgrading files those checks refuse is the point.
    """
    from ..serve.hub import parse_source, resolve_model_file

    file = resolve_model_file(parse_source(str(path)))
    extra = {METADATA_FILE: ""}
    try:
        with quiet_torchscript():
            module = torch.jit.load(file, map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as error:
        raise ExportError(f"{file} is not a TorchScript model ({str(error).splitlines()[0][:200]})") from None
    try:
        meta = json.loads(extra[METADATA_FILE])
        class_names, args = list(meta["class_names"]), dict(meta["training_args"])
        args.setdefault("arch", meta["arch"])
        recipe = stored_recipe(args, PreprocessConfig.from_dict(meta["preprocess"]))
    except (ValueError, KeyError, TypeError) as error:  # RecipeError and PreprocessConfigError are ValueErrors
        raise ExportError(f"{file} has no usable {METADATA_FILE} ({error}); export it from its checkpoint instead") from None
    state = {key.removeprefix("backbone."): value for key, value in module.state_dict().items()
             if key.startswith("backbone.")}
    metrics = meta.get("metrics") or {}
    return Source(build_backbone(recipe, len(class_names), state), class_names, recipe,
                  int((metrics.get("val") or {}).get("epoch", -1)),
                  metrics.get("batchnorm") or {"recalibrated": False},
                  meta.get("test_time_augmentation", "none") == "hflip_mean")


def recalibrate_on_training_images(backbone: nn.Module, samples, preprocess: PreprocessConfig, frozen_stages: int,
                                   workers: int) -> int:
    """Give the unfrozen BatchNorm layers the statistics of the training images as the app will see them
    (the eval transform), before anything is calibrated or measured. Returns the number of images used."""
    from .data import eval_loader
    from .engine import recalibrate_batchnorm
    from .models import frozen_stem_and_stages

    return recalibrate_batchnorm(backbone, eval_loader(samples, preprocess, workers, batch_size=64),
                                 keep=frozen_stem_and_stages(backbone, frozen_stages))


def imagenet_class_info() -> tuple[list[str], tuple]:
    """(a short name per ImageNet-1k class, the plant-like class indices), from timm's ImageNet metadata
    (every architecture's ImageNet view has an ImageNet-1k head: models.check_imagenet_head)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    wnids = [info.index_to_label_name(i) for i in range(info.num_classes())]
    return names, plant_like_indices(wnids)


# ------------------------------------------------------------------------------------------------ calibrate


def fit_prediction_sets(val: Outputs, temperature: float, level: float, penalty: float | None,
                        k_reg: int) -> tuple[ConformalSets, dict]:
    """Conformal sets on the calibrated probabilities of the val photos never trained on; the RAPS penalty
    chosen on those photos too (:func:`~flowerdemo.core.conformal.select_penalty`) unless given."""
    probabilities = softmax(val.logits, temperature)
    report = {}
    if penalty is None:
        penalty, candidates = select_penalty(probabilities, val.labels, level, k_reg=k_reg)
        report = {"penalty_candidates": {str(p): row for p, row in candidates.items()}}
    return fit_conformal(probabilities, val.labels, level, penalty, k_reg), report


@dataclass(frozen=True)
class GateTargets:
    accept: float = 0.98  # the "not a flower" threshold accepts at least this share of val flowers
    reject: float = 0.99  # ... and aims to reject this share of the calibration non-flowers
    knn_accept: float = 0.95  # k-NN alone (what a plant-like photo answers to): the flower guarantee
    knn_reject: float = 0.90  # ... and its non-flower target
    unknown_accept: float = 0.99  # known val flowers within the "unknown species" distance
    knn_k: int = 5
    unknown_species_accept: float = 0.95  # with photos from elsewhere: known flowers kept by the unknown rule
    low_quality_accept: float = 0.995  # small/soft calibration flowers the stricter "not a flower" rule keeps
    low_quality_fraction: float = 0.5  # "too small": sharpness under this share of val's 1st percentile


def gate_features(outputs: Outputs, bank: torch.Tensor, k: int) -> np.ndarray:
    """[N, 1001]: the ImageNet view's log-probabilities, then the k-NN distance (the combined rule's inputs)."""
    return np.concatenate([log_softmax_np(outputs.imagenet_logits), knn_distance(outputs.embeddings, bank, k)[:, None]],
                          axis=1)


def fit_gate(val: Outputs, nonflowers: Outputs, bank: torch.Tensor, plant_like: tuple,
             targets: GateTargets) -> tuple[FlowerGate, dict]:
    """The verdict rule and a report of how it was chosen, from val flowers against calibration non-flowers.

    The regression's strength (L2) is chosen by out-of-fold AUROC, and the "not a flower" threshold on
    out-of-fold scores too: in-sample scores of a 1,001-feature regression would make the margin look wider
    than it will be on new photos.
    """
    features = np.concatenate([gate_features(val, bank, targets.knn_k), gate_features(nonflowers, bank, targets.knn_k)])
    is_nonflower = np.r_[np.zeros(len(val)), np.ones(len(nonflowers))]
    folds = int(min(5, len(val), len(nonflowers)))
    if folds < 2:
        raise ExportError("fitting the verdict rule needs at least 2 val flowers and 2 calibration non-flowers")
    candidates = {}
    for l2 in L2_CANDIDATES:
        scores = out_of_fold_scores(features, is_nonflower, l2, folds)
        candidates[l2] = (roc_auc(scores[is_nonflower == 1], scores[is_nonflower == 0]), scores)
    best_l2 = max(L2_CANDIDATES, key=lambda l2: (round(candidates[l2][0], 6), l2))  # ties: the stronger prior
    oof = candidates[best_l2][1]
    weights, bias = fit_logistic(features, is_nonflower, best_l2)
    flowers, others = is_nonflower == 0, is_nonflower == 1
    reject_threshold = threshold_with_widest_margin(oof[flowers], oof[others], targets.accept, targets.reject)
    knn = features[:, -1]
    knn_reject = threshold_with_widest_margin(knn[flowers], knn[others], targets.knn_accept, targets.knn_reject)
    gate = FlowerGate(knn_k=targets.knn_k, imagenet_weights=tuple(weights[:-1]), knn_weight=float(weights[-1]),
                      bias=bias, reject_threshold=reject_threshold, knn_reject_threshold=knn_reject,
                      unknown_threshold=threshold_at_acceptance(knn[flowers], targets.unknown_accept),
                      plant_like=plant_like)
    report = {
        "l2": best_l2, "folds": folds, "val_flowers": int(flowers.sum()), "nonflowers": int(others.sum()),
        "l2_candidates_oof_auroc": {str(l2): candidates[l2][0] for l2 in L2_CANDIDATES},
        "oof_auroc": {"knn": roc_auc(knn[others], knn[flowers]), "combined": candidates[best_l2][0]},
        "targets": {"accept": targets.accept, "reject": targets.reject, "knn_accept": targets.knn_accept,
                    "knn_reject": targets.knn_reject, "unknown_accept": targets.unknown_accept},
        "oof_val_flowers_rejected": float((oof[flowers] > reject_threshold).mean()),
        "oof_nonflowers_rejected": float((oof[others] > reject_threshold).mean()),
    }
    return gate, report



# ------------------------------------------------------------------------------------------------ calibration pool


@dataclass(frozen=True)
class CalibrationPool:
    """What the temperature, the prediction sets and the verdict rule are fitted on: the val photos never
    trained on and, with ``--extra-data``, the calibration share of the photos from elsewhere (never trained on,
    never reported on; training/field.py). ``field`` rows carry their accepted class indices; unknown species
    carry none."""

    val: Outputs
    field: Outputs | None = None
    field_kinds: tuple = ()
    field_accept: tuple = ()  # per field photo, the accepted class indices

    @property
    def has_field(self) -> bool:
        return self.field is not None and len(self.field) > 0

    def sharp(self, level: float) -> "CalibrationPool":
        """The pool without the field photos whose sharpness is under ``level`` (val is kept whole)."""
        if not self.has_field:
            return self
        keep = self.field.sharpness >= level
        field = Outputs(self.field.logits[keep], self.field.embeddings[keep], self.field.labels[keep],
                        self.field.imagenet_logits[keep], self.field.sharpness[keep])
        return CalibrationPool(self.val, field, tuple(k for k, m in zip(self.field_kinds, keep) if m),
                               tuple(a for a, m in zip(self.field_accept, keep) if m))

    def known_field(self) -> np.ndarray:
        return np.array([kind in ("known", "loose") and bool(accept)
                         for kind, accept in zip(self.field_kinds, self.field_accept)], dtype=bool)

    def unknown_field(self) -> np.ndarray:
        return np.array([kind == "unknown" for kind in self.field_kinds], dtype=bool)

    def labelled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, labels, sharpness) of every photo of a known species: val, then the field's known and
        genus-level photos, each labelled with the accepted class the model ranks highest (any of them is right)."""
        if not self.has_field:
            return self.val.logits, self.val.labels, self.val.sharpness
        known = self.known_field()
        logits = self.field.logits[known]
        labels = np.array([max(accept, key=lambda i: row[i]) for row, accept
                           in zip(logits, [a for a, k in zip(self.field_accept, known) if k])], dtype=np.int64)
        return (np.concatenate([self.val.logits, logits]), np.concatenate([self.val.labels, labels]),
                np.concatenate([self.val.sharpness, self.field.sharpness[known]]))

    def flowers(self) -> Outputs:
        """Every flower photo (known and unknown species): what "not a flower" must accept."""
        if not self.has_field:
            return self.val
        parts = (self.val, self.field)
        return Outputs(np.concatenate([o.logits for o in parts]), np.concatenate([o.embeddings for o in parts]),
                       np.concatenate([self.val.labels, np.full(len(self.field), -1)]),
                       np.concatenate([o.imagenet_logits for o in parts]), np.concatenate([o.sharpness for o in parts]))


def capped_per_class(samples, cap: int) -> list:
    """At most ``cap`` samples per class, chosen by the file-name hash (training/field.py), not by folder order."""
    from .field import photo_position

    kept, counts = [], {}
    for sample in sorted(samples, key=lambda s: photo_position(s.path)):
        if counts.get(sample.label, 0) < cap:
            counts[sample.label] = counts.get(sample.label, 0) + 1
            kept.append(sample)
    return kept


def field_calibration_rows(folders, recipe: Recipe) -> list:
    """The photos from elsewhere to calibrate on: the calibration share of every kind of flower, and also the
    unknown species of the training share (the trainer never learns from those). Never the test share."""
    from .field import read_feedback_samples, read_field_labels

    rows = []
    split = recipe.field_split
    for folder in folders:
        folder = Path(folder)
        every = read_field_labels(folder) if (folder / "labels.csv").is_file() else read_feedback_samples(folder)
        rows += [row for row in every if row.kind != "not_a_flower" and
                 (split.part(row.path) == "calibration" or (row.kind == "unknown" and split.part(row.path) == "train"))]
    return rows


def fit_unknown_rule(pool: CalibrationPool, bank: torch.Tensor, temperature: float, gate: FlowerGate,
                     targets: GateTargets) -> tuple[FlowerGate, dict]:
    """"A flower I don't know" from known flowers (val and the field's) against the field's unknown species:
    a logistic regression on the k-NN distance and the surprise of the top class (-log p), its threshold
    keeping ``unknown_species_accept`` of the known flowers (on out-of-fold scores)."""
    known_field, unknown_field = pool.known_field(), pool.unknown_field()
    if not unknown_field.any():
        return gate, {"fitted_on": "val k-NN distance only (no unknown species among the photos from elsewhere)"}

    def features(outputs: Outputs, rows) -> np.ndarray:
        knn = knn_distance(outputs.embeddings[rows], bank, gate.knn_k)
        top = softmax(outputs.logits[rows], temperature).max(axis=1)
        return np.stack([knn, -np.log(np.clip(top, 1e-12, 1.0))], axis=1)

    every = np.ones(len(pool.val), dtype=bool)
    known = np.concatenate([features(pool.val, every), features(pool.field, known_field)])
    unknown = features(pool.field, unknown_field)
    x = np.concatenate([known, unknown])
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    oof = out_of_fold_scores(x, y, l2=0.01, folds=5)
    weights, bias = fit_logistic(x, y, l2=0.01)
    # Both collections must keep their share: val's photos sit farther from the bank than the field's (whose
    # look-alikes fill the bank), so one threshold over the mix let 9 % of val's flowers, and 14 % of the test
    # split's, be called unknown in the first export of this pool.
    val_oof, field_oof = oof[:len(pool.val)], oof[len(pool.val):len(known)]
    threshold = max(threshold_at_acceptance(val_oof, targets.unknown_accept),
                    threshold_at_acceptance(field_oof, targets.unknown_species_accept) if len(field_oof) else -np.inf)
    fitted = replace(gate, unknown_weights=(float(weights[0]), float(weights[1])), unknown_bias=float(bias),
                     unknown_threshold=threshold)
    report = {"known_flowers": int(len(known)), "unknown_species": int(len(unknown)),
              "weights": {"knn": float(weights[0]), "surprise": float(weights[1])},
              "oof_auroc": roc_auc(oof[y == 1], oof[y == 0]),
              "oof_known_called_unknown": float((oof[y == 0] > threshold).mean()),
              "oof_val_called_unknown": float((val_oof > threshold).mean()),
              "oof_unknown_called_unknown": float((oof[y == 1] > threshold).mean())}
    return fitted, report


def fit_low_quality_rule(pool: CalibrationPool, gate: FlowerGate, bank: torch.Tensor, temperature: float,
                         targets: GateTargets) -> tuple[FlowerGate, dict]:
    """"Too small or blurry to tell well": a sharpness under ``low_quality_fraction`` of the val photos' 1st
    percentile; such a photo is "not a flower" only past the log-odds that ``low_quality_accept`` of the small
    calibration flowers stay under (so smallness alone never makes a flower "not a flower")."""
    level = low_quality_level(pool.val, targets)
    flowers = pool.flowers()
    scores = gate.scores(flowers.imagenet_logits, flowers.embeddings, bank, softmax(flowers.logits, temperature))
    small = flowers.sharpness < level
    report = {"sharpness_threshold": level, "small_calibration_flowers": int(small.sum()),
              "val_photos_small": float((pool.val.sharpness < level).mean())}
    strict = gate.reject_threshold
    if small.sum() >= 20:
        strict = max(strict, threshold_at_acceptance(scores.combined[small], targets.low_quality_accept))
    report["reject_threshold"] = strict
    return replace(gate, low_quality_sharpness=level, low_quality_reject_threshold=strict), report


def low_quality_level(val: Outputs, targets: GateTargets) -> float:
    """The sharpness under which a photo is too small or soft to judge well: a share of val's 1st percentile."""
    return float(np.percentile(val.sharpness, 1)) * targets.low_quality_fraction


def fit_on_pool(pool: CalibrationPool, fit_out: Outputs, bank: torch.Tensor, plant_like: tuple, targets: GateTargets,
                level: float, penalty: float | None, k_reg: int):
    """(temperature, prediction sets, verdict rule, report): every calibration step on the same pool.

    The temperature, the sets and the "not a flower" regression are fitted on the photos with enough detail to
    judge (val's and the field's): fitted with the thumbnails in, the first export of this pool gave Flowers-102
    test photos sets of 4.5 species (99.6 % coverage), a temperature that left them under-confident (ECE 6.6 %)
    and a looser "not a flower" rule (98.0 % of held-out non-flowers rejected). Small photos get their own,
    stricter "not a flower" threshold and the "too small" verdict (:func:`fit_low_quality_rule`).
    """
    sharp = pool.sharp(low_quality_level(pool.val, targets))
    logits, labels, _ = sharp.labelled()
    temperature = fit_temperature(logits, labels)
    sets, sets_report = fit_prediction_sets(Outputs(logits, np.zeros((len(labels), 1)), labels), temperature, level,
                                            penalty, k_reg)
    gate, gate_report = fit_gate(sharp.flowers(), fit_out, bank, plant_like, targets)
    gate, unknown_report = fit_unknown_rule(pool, bank, temperature, gate, targets)
    gate, small_report = fit_low_quality_rule(pool, gate, bank, temperature, targets)
    pool_report = {"val_photos": int(len(pool.val)), "field_photos": int(len(pool.field)) if pool.has_field else 0,
                   "field_known": int(pool.known_field().sum()) if pool.has_field else 0,
                   "field_unknown_species": int(pool.unknown_field().sum()) if pool.has_field else 0,
                   "field_photos_with_detail": int(len(sharp.field)) if sharp.has_field else 0}
    return temperature, sets, gate, {"calibration_pool": pool_report, "prediction_sets_fit": sets_report,
                                     "gate_fit": gate_report, "unknown_species_fit": unknown_report,
                                     "too_small_fit": small_report}

# ------------------------------------------------------------------------------------------------ cost


def measure_cost(scripted: torch.jit.ScriptModule, crop: int, runs: int = 20) -> dict:
    """Single-image latency of the whole network and of the ImageNet view alone (medians, this machine)."""
    x = torch.randn(1, 3, crop, crop)

    def median_ms(call) -> float:
        with torch.inference_mode():
            for _ in range(3):
                call()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 1)

    def whole():
        features = scripted.features(x)
        scripted.head(features)
        scripted.imagenet_logits(x)

    parameters = sum(p.numel() for p in scripted.imagenet.parameters())
    return {"imagenet_view_parameters": int(parameters),
            "imagenet_view_megabytes": round(parameters * torch.finfo(IMAGENET_VIEW_DTYPE).bits / 8 / 1e6, 1),
            "forward_ms_median": median_ms(whole), "imagenet_view_ms_median": median_ms(lambda: scripted.imagenet_logits(x)),
            "threads": torch.get_num_threads(), "runs": runs}


# ------------------------------------------------------------------------------------------------ main


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export trained weights as a self-describing model folder",
                                     add_help=add_help, prog=prog)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default="runs/lite0/model_best.pth", help="a trainer checkpoint")
    source.add_argument("--from-model", default=None,
                        help="re-export the network of an earlier model (folder, model.pt or hf://...): the upgrade "
                             "path for models from an older flowerdemo; its BatchNorm statistics are kept")
    parser.add_argument("--output", default="weights", help="model folder to write (uploadable to the Hub as is)")
    add_data_arguments(parser)
    parser.add_argument("--nonflowers-path", required=True,
                        help="a folder of everyday photos that are not flowers (a few hundred: pets, food, streets, "
                             "rooms, leaves...); in file-name order, the even-numbered ones fit the 'not a flower' "
                             "rule and the odd-numbered ones are held out to report on it")
    parser.add_argument("--pretrained-file", default="",
                        help="a local ImageNet weights file for the architecture (its 'not a flower' view), loaded "
                             "through timm's pretrained loading; default: the Hugging Face cache or Hub")
    parser.add_argument("--rename-classes", action="store_true",
                        help="give the model the dataset's class names when they differ from the weights' own but "
                             "count the same (e.g. torchvision's 'lotus' for 'lotus lotus'; label order must agree)")
    parser.add_argument("--extra-data", nargs="+", default=[], metavar="FOLDER",
                        help="the photos from elsewhere the model trained with (train --extra-data): their training "
                             "share joins the k-NN bank, their calibration share (by the recipe's field split) is "
                             "calibrated on beside the val photos, and their test share is reported on")
    parser.add_argument("--unknown-species-accept", type=float, default=GateTargets.unknown_species_accept,
                        help="with --extra-data: share of known calibration flowers the 'unknown species' rule keeps")
    parser.add_argument("--knn-k", type=int, default=GateTargets.knn_k)
    parser.add_argument("--accept", type=float, default=GateTargets.accept,
                        help="the 'not a flower' threshold accepts at least this share of val flowers, always")
    parser.add_argument("--reject", type=float, default=GateTargets.reject,
                        help="target share of calibration non-flowers to reject; the threshold clears both targets "
                             "by the widest margin")
    parser.add_argument("--unknown-accept", type=float, default=GateTargets.unknown_accept,
                        help="share of val flowers of known species within the 'unknown species' k-NN distance")
    parser.add_argument("--set-level", type=float, default=0.95, help="prediction sets hold the true species this often")
    parser.add_argument("--set-penalty", type=float, default=None,
                        help="RAPS penalty per rank beyond --set-k-reg (0: APS); default: chosen on val (the smallest "
                             "sets whose worst coverage over random val halves stays a point above the level)")
    parser.add_argument("--set-k-reg", type=int, default=1)
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=None,
                        help="the network averages each photo with its mirror image (about twice the compute); "
                             "default: on, or as the --from-model model did")
    parser.add_argument("--recalibrate-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="recompute the BatchNorm statistics of the layers that trained on the training images "
                             "at the eval transform (training saw smaller, augmented crops); checkpoints only")
    parser.add_argument("--test-split", default="test", help="reported split ('' to skip)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="smoke tests only")
    parser.add_argument("--workers", type=int, default=2)
    return parser


def load_source(args) -> Source:
    if args.from_model:
        return source_from_model(args.from_model)
    if not Path(args.checkpoint).is_file():
        raise ExportError(f"checkpoint not found: {args.checkpoint} (train one with python -m flowerdemo.training.train, "
                          "or re-export a model with --from-model)")
    return source_from_checkpoint(args.checkpoint)


def resolve_class_names(weights: list, data: list, data_path: str, rename: bool) -> list:
    """The names the model will carry: the weights' own, or the dataset's under ``--rename-classes``."""
    if list(weights) == list(data):
        return list(data)
    renamed = [f"{old!r} -> {new!r}" for old, new in zip(weights, data) if old != new]
    if len(weights) != len(data):
        raise ExportError(f"the weights know {len(weights)} classes but {data_path} names {len(data)}; export with "
                          "the data the model was trained on")
    if not rename:
        raise ExportError(f"{data_path} names {len(renamed)} of the {len(data)} classes differently "
                          f"({', '.join(renamed[:5])}); pass --rename-classes to take the dataset's names (the label "
                          "order must be the same), or export with the data the model was trained on")
    print(f"renaming {len(renamed)} classes to the dataset's names: {', '.join(renamed)}")
    return list(data)


def main(args) -> dict:
    from .evaluate import collect_outputs, evaluate_split, write_report_files

    started = time.time()
    output = Path(args.output)
    source = load_source(args)
    mirror_average = args.mirror_average if args.mirror_average is not None else source.mirror_average is not False
    nonflower_fit, nonflower_holdout = nonflower_photos(args.nonflowers_path)
    # The k-NN bank holds what the network trained on; calibration uses only val images it never trained on.
    recipe, data = source.recipe, DataSource.from_args(args)
    train_samples, val_samples, data_class_names = training_and_selection_samples(
        data, recipe.train_split, recipe.val_split, recipe.val_fraction_for_training, args.limit_per_class)
    class_names = resolve_class_names(source.class_names, data_class_names, args.data_path, args.rename_classes)
    extra_folders = list(args.extra_data)
    if extra_folders:
        from .data import extra_training_samples

        # What the network trained on, with a few of each species' extra photos: the k-NN bank (the hundreds of
        # web dandelions would add megabytes to model.pt and nothing to a k-th-neighbour distance) and the
        # BatchNorm statistics (which then see both collections, as training did).
        extra = extra_training_samples(extra_folders, class_names, recipe.field_split)
        train_samples = train_samples + capped_per_class(extra, BANK_EXTRA_PER_CLASS)
    batchnorm = source.batchnorm
    if args.recalibrate_bn and not args.from_model:
        batchnorm = {"recalibrated": True, "images": recalibrate_on_training_images(
            source.backbone, train_samples, source.preprocess, recipe.freeze_stages, args.workers)}

    from .models import create_imagenet_model

    imagenet = round_to_storage_precision(create_imagenet_model(recipe.arch, source.preprocess, args.pretrained_file))
    imagenet_names, plant_like = imagenet_class_info()
    plain = script_model(source.backbone, imagenet, mirror_average=mirror_average)
    check_contract(plain, source.preprocess.crop)
    train_out = collect_outputs(plain, source.preprocess, train_samples, args.workers, "train bank", imagenet=False)
    val_out = collect_outputs(plain, source.preprocess, val_samples, args.workers, "val")
    fit_out = collect_outputs(plain, source.preprocess, nonflower_fit, args.workers, "non-flowers (fit)")
    pool = calibration_pool(plain, source.preprocess, val_out, extra_folders, recipe, class_names, args.workers)

    bank = normalize(torch.from_numpy(train_out.embeddings))
    targets = GateTargets(args.accept, args.reject, unknown_accept=args.unknown_accept, knn_k=args.knn_k,
                          unknown_species_accept=args.unknown_species_accept)
    temperature, sets, gate, fit_reports = fit_on_pool(pool, fit_out, bank, plant_like, targets, args.set_level,
                                                       args.set_penalty, args.set_k_reg)
    gate_report = fit_reports["gate_fit"]
    print(f"temperature {temperature:.3f}; prediction sets at {sets.level:.0%}: qhat {sets.qhat:.4f}; verdict rule: "
          f"L2 {gate_report['l2']}, out-of-fold AUROC {gate_report['oof_auroc']['combined']:.4f} "
          f"(k-NN alone {gate_report['oof_auroc']['knn']:.4f}); calibration pool {fit_reports['calibration_pool']}")

    scripted = script_model(source.backbone, imagenet, bank, torch.from_numpy(train_out.labels), mirror_average)
    metadata = assemble_metadata(source, class_names, temperature, gate, imagenet_names, sets, mirror_average, {
        "val": {"top1": float((val_out.logits.argmax(1) == val_out.labels).mean()), "epoch": source.epoch,
                "images": len(val_out)},
        **fit_reports, "batchnorm": batchnorm,
        "cost": measure_cost(scripted, source.preprocess.crop)})
    output.mkdir(parents=True, exist_ok=True)
    model_path = output / MODEL_FILE
    save_model(scripted, metadata, model_path)
    verify_saved(model_path, metadata)

    if args.test_split:
        report = evaluate_split(str(model_path), data, args.test_split, nonflower_holdout,
                                args.workers, args.limit_per_class)
        metadata = replace(metadata, metrics=dict(metadata.metrics, **metrics_from_report(report)))
        field_folders = [folder for folder in extra_folders if (Path(folder) / "labels.csv").is_file()]
        if field_folders:  # the photos from elsewhere never trained or calibrated on: their test share
            from .evaluate import evaluate_field, format_field_report

            field = evaluate_field(str(model_path), field_folders[0], part="test", workers=args.workers)
            print(format_field_report(field))
            metadata.metrics["field"] = field.to_dict()
        metadata.metrics["cost"]["model_megabytes"] = round(model_path.stat().st_size / 1e6, 1)
        save_model(scripted, metadata, model_path)
        write_report_files(report, output, class_names)
    from .model_card import write_model_card

    write_model_card(output, metadata)
    (output / "metrics.json").write_text(json.dumps(metadata.metrics, indent=2))
    print(f"wrote {output} in {time.time() - started:.0f}s")
    return metadata.metrics


def calibration_pool(module, preprocess: PreprocessConfig, val_out: Outputs, folders, recipe: Recipe, class_names,
                     workers: int) -> CalibrationPool:
    """The val photos' outputs and, with ``folders``, those of the field's calibration photos."""
    if not folders:
        return CalibrationPool(val_out)
    from .data import Sample
    from .evaluate import collect_outputs

    rows = field_calibration_rows(folders, recipe)
    if not rows:
        raise ExportError(f"--extra-data {' '.join(map(str, folders))} has no photos in its calibration share")
    index = {name: i for i, name in enumerate(class_names)}
    outputs = collect_outputs(module, preprocess, [Sample(row.path, -1) for row in rows], workers, "elsewhere (calibration)")
    return CalibrationPool(val_out, outputs, tuple(row.kind for row in rows), tuple(row.labels(index) for row in rows))


def assemble_metadata(source: Source, class_names, temperature: float, gate: FlowerGate, imagenet_names,
                      sets: ConformalSets, mirror_average: bool, metrics: dict) -> ModelMetadata:
    return ModelMetadata(
        class_names=tuple(class_names), preprocess=source.preprocess, arch=source.recipe.arch,
        temperature=temperature, gate=gate, imagenet_class_names=tuple(imagenet_names), prediction_sets=sets,
        training_args=source.recipe.to_dict(), flowerdemo_version=__version__, metrics=metrics,
        test_time_augmentation="hflip_mean" if mirror_average else "none",
    )


def verify_saved(path: Path, metadata: ModelMetadata) -> None:
    """The file loads through the app's own loader and says what was meant to be said."""
    _, loaded = load_artifact(path)
    if loaded.to_dict() != ModelMetadata.from_dict(json.loads(metadata.to_json())).to_dict():
        raise ExportError(f"{path} does not round-trip its metadata")


def metrics_from_report(report: dict) -> dict:
    """The evaluator's findings the artifact carries (the UI, the model card and metrics.json read these)."""
    keys = ("verdicts", "ood", "unknown_species", "prediction_sets")
    return {"test": report["summary"], "calibration": report["calibration"],
            **{key: report[key] for key in keys if key in report}}


# What a user can fix from the command line: one line on stderr, never a traceback.
USER_ERRORS = (ExportError, ModelLoadError, DatasetLayoutError, RecipeError, ArchitectureError, PretrainedWeightsError,
               CheckpointError)


def cli(argv=None, prog: str | None = None) -> int:
    from ..cli import run_step

    return run_step("export", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
