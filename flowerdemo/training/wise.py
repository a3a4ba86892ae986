"""WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the weights of a fine-tune mixed
with those it started from, ``(1 - alpha) * start + alpha * fine-tuned``, with ``alpha`` chosen on photos never
trained on. Fine-tuning on a few thousand photos moves the network away from what it knew; part of the way back
often keeps the new photos' gains and recovers the old ones.

    python -m flowerdemo.training.wise --start weights --finetuned runs/web/model_best.pth \\
        --extra-data DATA/elsewhere --output runs/web/wise.pth

``--start``: the model the fine-tune began from (``train --init-from``: an exported model folder or a trainer
checkpoint). ``alpha`` is chosen on the val photos the exporter also keeps for selection and on the calibration
share of ``--extra-data`` (training/field.py), by the mean of their top-1: Flowers-102 and the photos people take
weigh the same. The result is a trainer checkpoint (recipe and all) for ``flowerdemo export --checkpoint``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .data import DataSource, DatasetLayoutError, Sample, add_data_arguments, eval_loader, training_and_selection_samples
from .field import ANSWERED_KINDS, read_field_labels
from .models import create_model
from .recipe import Recipe, RecipeError
from .sources import initial_weights
from .steps import run_step

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


class WiseError(ValueError):
    """The two networks cannot be mixed, or there is nothing to choose on; the message says what to change."""


def interpolate(start: dict, finetuned: dict, alpha: float) -> dict:
    """``(1 - alpha) * start + alpha * finetuned`` for every floating-point tensor (BatchNorm statistics
    included); integer tensors (BatchNorm's step counters) are the fine-tune's."""
    if set(start) != set(finetuned):
        missing = sorted(set(start) ^ set(finetuned))[:5]
        raise WiseError(f"the two networks do not have the same layers (e.g. {', '.join(missing)}); mix a fine-tune "
                        "with the model it started from")
    mixed = {}
    for name, tuned in finetuned.items():
        if start[name].shape != tuned.shape:
            raise WiseError(f"{name} is {list(start[name].shape)} in --start but {list(tuned.shape)} in --finetuned")
        mixed[name] = torch.lerp(start[name].float(), tuned.float(), alpha).to(tuned.dtype) \
            if tuned.is_floating_point() else tuned.clone()
    return mixed


@dataclass(frozen=True)
class SelectionSet:
    """Preprocessed photos to choose ``alpha`` on, each with the class indices that count as right."""

    name: str
    images: torch.Tensor  # [N, 3, H, W] (float16 to halve the memory; cast back per batch)
    accept: tuple

    def top1(self, logits: np.ndarray) -> float:
        predicted = logits.argmax(axis=1)
        return float(np.mean([p in accept for p, accept in zip(predicted, self.accept)]))


def selection_sets(source: DataSource, recipe: Recipe, class_names, extra_data, workers: int) -> list[SelectionSet]:
    _, val_samples, _ = training_and_selection_samples(source, recipe.train_split, recipe.val_split,
                                                       recipe.val_fraction_for_training)
    sets = [_prepared("val", val_samples, [(s.label,) for s in val_samples], recipe, workers)]
    index = {name: i for i, name in enumerate(class_names)}
    for folder in extra_data:
        rows = [row for row in read_field_labels(folder) if row.kind in ANSWERED_KINDS and row.labels(index)
                and recipe.field_split.part(row.path) == "calibration"]
        if rows:
            sets.append(_prepared(Path(folder).name, [Sample(row.path, -1) for row in rows],
                                  [row.labels(index) for row in rows], recipe, workers))
    return sets


def _prepared(name: str, samples, accept, recipe: Recipe, workers: int) -> SelectionSet:
    batches = [images.half() for images, _ in eval_loader(samples, recipe.preprocess, workers, batch_size=64)]
    return SelectionSet(name, torch.cat(batches), tuple(accept))


@torch.inference_mode()
def score(model: torch.nn.Module, sets: list[SelectionSet]) -> dict:
    model.eval()
    results = {}
    for selection in sets:
        logits = torch.cat([model(chunk.float()) for chunk in selection.images.split(64)]).numpy()
        results[selection.name] = selection.top1(logits)
    results["mean"] = float(np.mean([results[s.name] for s in sets]))
    return results


def choose_alpha(scores: dict) -> float:
    """The alpha with the best mean top-1; ties go to the larger alpha (closer to the fine-tune)."""
    return max(scores, key=lambda alpha: (round(scores[alpha]["mean"], 6), alpha))


def main(args) -> dict:
    checkpoint = load_checkpoint(args.finetuned)
    recipe, class_names = Recipe.from_dict(checkpoint["recipe"]), list(checkpoint["class_names"])
    start = initial_weights(args.start)
    sets = selection_sets(DataSource.from_args(args), recipe, class_names, args.extra_data, args.workers)
    model = create_model(recipe.arch, len(class_names), pretrained=False)
    scores = {}
    for alpha in args.alphas:
        model.load_state_dict(interpolate(start, checkpoint["model"], alpha))
        scores[alpha] = score(model, sets)
        print(f"alpha {alpha:.2f}: " + ", ".join(f"{name} top-1 {value:.4f}" for name, value in scores[alpha].items()),
              flush=True)
    alpha = choose_alpha(scores)
    state = dict(checkpoint)
    for key in ("optimizer", "lr_scheduler", "rng_state", "raw_model"):
        state.pop(key, None)  # a new network: not resumable as the old run
    state["model"] = interpolate(start, checkpoint["model"], alpha)
    state["metrics"] = dict(checkpoint.get("metrics") or {}, wise_alpha=alpha,
                            wise_selection={str(a): s for a, s in scores.items()})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(Path(args.output), **state)
    print(f"chose alpha {alpha} (mean top-1 {scores[alpha]['mean']:.4f}); wrote {args.output}")
    return {"alpha": alpha, "scores": scores}


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Mix a fine-tune with the weights it started from (WiSE-FT)",
                                     add_help=add_help, prog=prog)
    parser.add_argument("--start", required=True, help="what the fine-tune started from: a model folder or checkpoint")
    parser.add_argument("--finetuned", required=True, help="the fine-tune's checkpoint (model_best.pth)")
    parser.add_argument("--output", required=True, help="the mixed checkpoint to write")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                        help="shares of the fine-tune to try (default: %(default)s)")
    parser.add_argument("--extra-data", nargs="*", default=[], metavar="FOLDER",
                        help="labels.csv folders whose calibration share also chooses alpha")
    add_data_arguments(parser)
    parser.add_argument("--workers", type=int, default=2)
    return parser


USER_ERRORS = (WiseError, CheckpointError, DatasetLayoutError, RecipeError)


def cli(argv=None, prog: str | None = None) -> int:
    return run_step("wise", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
