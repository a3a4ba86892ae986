"""Training checkpoints: what a trainer run writes every epoch (``checkpoint.pth``, and ``model_best.pth`` for the
best epoch on val), reading them back, and resuming a run from one.

Checkpoints hold plain types only (they load with ``torch.load(..., weights_only=True)``): the weights, the
optimizer and schedule state, and the typed :class:`~flowerdemo.training.recipe.Recipe` that a resumed run must
agree with. ``model`` always holds the weights to ship (the EMA average when EMA is on; the raw weights then go
under ``raw_model``), so export and ``--init-from`` need not know whether EMA was used.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import torch

from .. import __version__
from .recipe import Recipe, RecipeError


class CheckpointError(ValueError):
    """A checkpoint is missing or is not one this trainer wrote."""


def save_checkpoint(path: Path, **state) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)  # never leave a half-written checkpoint behind a crash


def load_checkpoint(path: str | Path) -> dict:
    """A trainer checkpoint, read with ``weights_only=True`` (tensors and plain types; no code runs)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:  # foreign objects inside, or not a torch file at all
        raise CheckpointError(f"{path} is not a flowerdemo checkpoint of plain tensors and values "
                              f"({str(error).splitlines()[0][:200]})") from None


def save_epoch(output_dir: Path, row: dict, recipe: Recipe, model, model_ema, optimizer, scheduler, class_names,
               best: dict) -> dict:
    """Write ``checkpoint.pth`` (resumable) and, when this epoch validated best so far, ``model_best.pth``; return
    the best epoch's row."""
    shipped = model_ema.module if model_ema is not None else model
    state = {"model": shipped.state_dict(), "recipe": recipe.to_dict(), "class_names": list(class_names),
             "epoch": row["epoch"] - 1, "metrics": row, "flowerdemo_version": __version__}
    if row.get("val_top1", -1.0) > best["val_top1"]:
        best = dict(row)
        save_checkpoint(output_dir / "model_best.pth", **state, best=best)
    resume_state = {"raw_model": model.state_dict()} if model_ema is not None else {}
    save_checkpoint(output_dir / "checkpoint.pth", **state, **resume_state, best=best,
                    optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                    rng_state=torch.get_rng_state())
    return best


def resumed_recipe(recipe: Recipe, class_names, checkpoint: dict, path: str) -> Recipe:
    """The checkpoint's recipe, after checking the command line asks for the same one."""
    stored = Recipe.from_dict(checkpoint["recipe"])
    stored.check_resume(recipe, path)
    if list(checkpoint["class_names"]) != list(class_names):
        raise RecipeError(f"{path} was trained on other classes than the data now names; resume with the same data")
    return replace(stored, epochs=recipe.epochs)


def restore(checkpoint: dict, model, model_ema, optimizer, scheduler, is_main: bool) -> tuple[int, dict]:
    """Put a resumed run's weights, optimizer, schedule and (rank 0's) random state back; return (the epoch to
    start from, the best epoch's row so far)."""
    model.load_state_dict(checkpoint["raw_model"] if model_ema is not None else checkpoint["model"])
    if model_ema is not None:
        model_ema.module.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if is_main:
        torch.set_rng_state(checkpoint["rng_state"])
    return checkpoint["epoch"] + 1, checkpoint["best"]
