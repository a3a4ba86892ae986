"""Refit the classifier head on the trained network's frozen embeddings (a linear probe), with the training
share of photos from other collections beside Flowers-102's training photos.

    python -m flowerdemo probe --from-model weights --dataset flowers102 --data-path DATA \\
        --extra-data DATA/elsewhere DATA/webflowers --output-dir runs/probe
    python -m flowerdemo export --checkpoint runs/probe/model_best.pth ...

Why a probe and not another fine-tune: the head is 1280 x 102 numbers over features that already tell flowers
apart, so refitting it on every photo the network can learn from takes minutes on a laptop CPU; a fine-tune of
the body takes hours there. It is the "LP" of LP-FT (Kumar et al., 2022, "Fine-Tuning can Distort Pretrained
Features"): a fine-tune can start from the probed head. The head starts at the trained one and is pulled back
toward it by an L2 penalty, so the new photos teach it which features hold on ordinary photos without it
unlearning Flowers-102. The penalty's strength is chosen on the selection photos (val photos never trained on,
and each collection's calibration share): the mean top-1 over the collections, each counting once. The body,
its BatchNorm statistics (recalibrated first, as export would, when a trainer checkpoint's are not) and the
mirror averaging are kept as they are; the checkpoint records the probe in its recipe (``probe_l2``,
``probe_training_share``, ``probe_extra_data``).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..core.artifact import ModelLoadError
from .checkpoints import CheckpointError, save_checkpoint
from .data import DataSource, DatasetLayoutError, Sample, add_data_arguments, eval_loader, training_and_selection_samples
from .engine import collect_outputs
from .errors import ExportError
from .export import bank_samples, recalibrate_on_training_images
from .field import extra_training_samples, field_calibration_rows
from .recipe import RecipeError, extra_data_name
from .scripting import FlowerNet
from .sources import Source, source_from_checkpoint, source_from_model
from .steps import run_step

# Strengths of the pull toward the trained head, strongest first (chosen on the selection photos). Weaker than
# 1e-5 (or none) lets L-BFGS fit the training photos to the last one: 9 points of selection top-1 lost on the
# bundled model, against 1e-5.
L2_GRID = (1e-3, 1e-4, 3e-5, 1e-5, 3e-6)
# The share of the loss the training collection carries (the photos from elsewhere the rest). On the bundled
# model, with the pull chosen as above (selection top-1, training collection / elsewhere / webflowers): 0.5 gave
# 96.3 / 81.3 / 77.0 %, 0.7 gave 97.1 / 81.9 / 77.0 %, 0.85 gave 96.9 / 82.6 / 75.4 %.
TRAINING_SHARE = 0.7
TRAINING_COLLECTION = "training collection"


class ProbeError(ValueError):
    """The probe cannot run with what it was given (no photos from elsewhere to learn from, say)."""


@dataclass(frozen=True)
class Embedded:
    """Pooled embeddings [N, C] with, per row, the accepted class indices and the collection it comes from."""

    embeddings: np.ndarray
    accepted: tuple
    collections: tuple

    def __len__(self) -> int:
        return len(self.accepted)


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Refit a trained model's classifier head on its frozen embeddings "
                                                 "with photos from other collections (a linear probe)",
                                     add_help=add_help, prog=prog)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trainer checkpoint")
    source.add_argument("--from-model", help="the network of an exported model (folder, model.pt or hf://...)")
    add_data_arguments(parser)
    parser.add_argument("--extra-data", nargs="+", required=True, metavar="FOLDER",
                        help="photos from elsewhere (labels.csv folders, a feedback store or an ImageFolder tree): "
                             "their training share is learnt from and their calibration share chooses the pull")
    parser.add_argument("--l2", type=float, nargs="+", default=list(L2_GRID),
                        help="pull strengths to choose from (default: %(default)s)")
    parser.add_argument("--training-share", type=float, default=TRAINING_SHARE,
                        help="the share of the loss the training collection's photos carry (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200, help="L-BFGS iterations per fit")
    parser.add_argument("--output-dir", default="runs/probe", help="where model_best.pth and probe.json go")
    parser.add_argument("--limit-per-class", type=int, default=None, help="smoke tests only")
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main(args) -> dict:
    started = time.time()
    if not 0.0 < args.training_share < 1.0:
        raise ProbeError(f"--training-share must be between 0 and 1 (exclusive), got {args.training_share}")
    source = source_from_model(args.from_model) if args.from_model else source_from_checkpoint(args.checkpoint)
    if source.recipe.probe_l2 is not None:
        raise ProbeError("these weights were probed already (probe_l2 "
                         f"{source.recipe.probe_l2}); probe the model they came from instead")
    training, selection = probe_photos(args, source)
    batchnorm = recalibrated_batchnorm(source, training, args.workers)
    # as the exporter does: the mirror image averaged in unless the source model had it off
    network = FlowerNet(source.backbone, torch.nn.Identity(), mirror_average=source.mirror_average is not False)
    network.eval()
    train = embed(network, source, training, args.workers, "probe: training photos")
    select = embed(network, source, selection, args.workers, "probe: selection photos")
    head = network.backbone.get_classifier()
    initial = (head.weight.detach().double(), head.bias.detach().double())
    chosen, report = choose_l2(train, select, initial, tuple(args.l2), args.steps, args.training_share)
    recipe = source.recipe
    if chosen is not None:
        with torch.no_grad():
            head.weight.copy_(chosen[1].float())
            head.bias.copy_(chosen[2].float())
        recipe = replace(recipe, probe_l2=chosen[0], probe_training_share=args.training_share,
                         probe_extra_data=tuple(extra_data_name(folder) for folder in args.extra_data))
    report.update({"training_photos": collection_counts(train), "selection_photos": collection_counts(select),
                   "seconds": round(time.time() - started)})
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output / "model_best.pth", model=network.backbone.state_dict(), recipe=recipe.to_dict(),
                    class_names=list(source.class_names), epoch=max(source.epoch, 1) - 1, metrics={"probe": report},
                    batchnorm=batchnorm, mirror_average=network.mirror_average, flowerdemo_version=__version__)
    (output / "probe.json").write_text(json.dumps(report, indent=2))
    print(format_report(report))
    return report


def recalibrated_batchnorm(source: Source, training: list, workers: int) -> dict:
    """The source's BatchNorm record, after recalibrating a trainer checkpoint's statistics on the photos the
    exporter would use (what export does to a checkpoint, done first: the head must fit the features the app
    will compute)."""
    if source.batchnorm.get("recalibrated"):
        return source.batchnorm
    photos = bank_samples([s for s in training if s.source == TRAINING_COLLECTION],
                          [s for s in training if s.source != TRAINING_COLLECTION])
    return {"recalibrated": True, "images": recalibrate_on_training_images(
        source.backbone, photos, source.preprocess, source.recipe.freeze_stages, workers)}


def probe_photos(args, source: Source) -> tuple[list, list]:
    """(training samples, selection samples), each ``Sample.source`` naming its collection: what the network
    trained on plus the training share of ``--extra-data``; val photos never trained on plus each collection's
    calibration share (photos with a right answer among the model's classes)."""
    data = DataSource.from_args(args)
    recipe = source.recipe
    train, val, class_names = training_and_selection_samples(data, recipe.train_split, recipe.val_split,
                                                             recipe.val_fraction_for_training, args.limit_per_class)
    if list(class_names) != list(source.class_names):
        raise ProbeError(f"{args.data_path} names other classes than the weights know; probe with the data the "
                         "model was trained on")
    extra = extra_training_samples(list(args.extra_data), class_names, recipe.field_split)
    if not extra:
        raise ProbeError(f"--extra-data {' '.join(map(str, args.extra_data))} has no photos of the model's classes "
                         "in its training share: there is nothing new to learn from")
    index = {name: i for i, name in enumerate(class_names)}
    calibration = [Sample(row.path, row.labels(index)[0], field_collection(row.path, args.extra_data))
                   for row in field_calibration_rows(list(args.extra_data), recipe.field_split) if row.labels(index)]
    own = lambda samples: [replace(s, source=TRAINING_COLLECTION) for s in samples]
    return own(train) + extra, own(val) + calibration


def field_collection(path: str, folders) -> str:
    """The --extra-data folder name a photo comes from (each collection counts once in the selection)."""
    for folder in folders:
        if Path(path).is_relative_to(Path(folder)):
            return extra_data_name(folder)
    return str(Path(path).parent.name)


def embed(network: FlowerNet, source: Source, samples: list, workers: int, desc: str) -> Embedded:
    outputs = collect_outputs(network.features, network.head, eval_loader(samples, source.preprocess, workers),
                              desc=desc)
    collections_of = tuple(s.source.split("/")[0] if s.source else TRAINING_COLLECTION for s in samples)
    return Embedded(outputs.embeddings.astype(np.float64), tuple((int(s.label),) for s in samples), collections_of)


def balanced_weights(photos: Embedded, training_share: float = TRAINING_SHARE) -> np.ndarray:
    """Per photo, its share of the loss: the training collection carries ``training_share``, the photos from
    elsewhere the rest; within the photos from elsewhere every class counts the same (hundreds of web roses, a
    few of most species)."""
    own = np.asarray([c == TRAINING_COLLECTION for c in photos.collections])
    labels = [a[0] for a in photos.accepted]
    counts = collections.Counter(label for label, mine in zip(labels, own) if not mine)
    weights = np.asarray([1.0 if mine else 1.0 / counts[label] for label, mine in zip(labels, own)])
    both = own.any() and (~own).any()
    for part, share in ((own, training_share), (~own, 1.0 - training_share)):
        if part.any():
            weights[part] *= (share if both else 1.0) / weights[part].sum()
    return weights


def fit_head(photos: Embedded, initial: tuple, l2: float, steps: int = 200,
             training_share: float = TRAINING_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """The head minimising the weighted cross-entropy plus ``l2 * ||W - W0||^2``, from (W0, b0), by L-BFGS."""
    features = torch.from_numpy(photos.embeddings)
    targets = torch.tensor([a[0] for a in photos.accepted])
    weights = torch.from_numpy(balanced_weights(photos, training_share))
    start_weight, start_bias = (t.detach().double() for t in initial)
    weight, bias = start_weight.clone().requires_grad_(True), start_bias.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        losses = torch.nn.functional.cross_entropy(features @ weight.T + bias, targets, reduction="none")
        loss = (weights * losses).sum() + l2 * ((weight - start_weight) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def top1_by_collection(photos: Embedded, head: tuple) -> dict:
    """Per collection, the share of photos whose most likely class is an accepted one."""
    weight, bias = head
    predicted = (torch.from_numpy(photos.embeddings) @ weight.T + bias).argmax(1).numpy()
    right = np.asarray([p in a for p, a in zip(predicted, photos.accepted)])
    names = np.asarray(photos.collections)
    return {name: float(right[names == name].mean()) for name in sorted(set(photos.collections))}


def choose_l2(train: Embedded, select: Embedded, initial: tuple, grid: tuple, steps: int = 200,
              training_share: float = TRAINING_SHARE) -> tuple:
    """((l2, weight, bias) of the best fit, or None when none beats the trained head; the report). Best: the
    highest mean over collections of selection top-1."""
    before = top1_by_collection(select, initial)
    report = {"selection_top1_before": before, "selection_mean_before": _mean(before), "fits": [],
              "training_share": training_share}
    best, best_score = None, _mean(before)
    for l2 in grid:
        weight, bias = fit_head(train, initial, l2, steps, training_share)
        scores = top1_by_collection(select, (weight, bias))
        report["fits"].append({"l2": l2, "selection_top1": scores, "selection_mean": _mean(scores)})
        if _mean(scores) > best_score:
            best, best_score = (l2, weight, bias), _mean(scores)
    report["chosen_l2"] = None if best is None else best[0]
    return best, report


def _mean(scores: dict) -> float:
    return float(np.mean(list(scores.values())))


def collection_counts(photos: Embedded) -> dict:
    return dict(sorted(collections.Counter(photos.collections).items()))


def format_report(report: dict) -> str:
    lines = [f"selection top-1 before: {_format_scores(report['selection_top1_before'])} "
             f"(mean {report['selection_mean_before']:.4f})"]
    lines += [f"  l2 {fit['l2']:g}: {_format_scores(fit['selection_top1'])} (mean {fit['selection_mean']:.4f})"
              for fit in report["fits"]]
    chosen = report["chosen_l2"]
    lines.append("kept the trained head: no pull strength did better" if chosen is None
                 else f"chosen: l2 {chosen:g}")
    return "\n".join(lines)


def _format_scores(scores: dict) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())


USER_ERRORS = (ProbeError, ExportError, ModelLoadError, DatasetLayoutError, RecipeError, CheckpointError)


def cli(argv=None, prog: str | None = None) -> int:
    return run_step("probe", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
