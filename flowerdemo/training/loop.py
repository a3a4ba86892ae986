"""The training loop's parts: one epoch of training, validation, and rank 0's end of an epoch (validate, write
the checkpoints and the log line). Shaped like torchvision's references/classification (``train_one_epoch``,
``evaluate``)."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import save_epoch
from .distributed import unwrap
from .engine import collect_outputs
from .metrics import topk_accuracy
from .recipe import Recipe

LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "epoch_seconds",
               "train_images"]


def train_one_epoch(model, criterion, optimizer, scheduler, loader, device, epoch, frozen_modules, args,
                    model_ema=None, batch_mixer=None, progress_bar: bool = True) -> dict:
    model.train()
    for module in frozen_modules:  # frozen layers keep their ImageNet BatchNorm statistics
        module.eval()
    channels_last = device.type == "cuda"  # faster convolutions on tensor cores; no gain on CPU
    total_loss, correct, seen = 0.0, 0, 0
    start = time.time()
    progress = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", dynamic_ncols=True, disable=not progress_bar)
    for images, targets in progress:
        images = images.to(device, non_blocking=True,
                           memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        targets = targets.to(device, non_blocking=True)
        loss_targets = targets
        if batch_mixer is not None:
            images, loss_targets = batch_mixer(images, targets)
            targets = loss_targets.argmax(1)  # the larger share, for the running accuracy only
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
            loss = criterion(logits, loss_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if model_ema is not None:
            model_ema.update(unwrap(model), step=scheduler.last_epoch)
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                             lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return {"train_loss": total_loss / seen, "train_acc": correct / seen, "train_images": seen,
            "epoch_seconds": time.time() - start}


def evaluate(model, loader, device, desc: str = "val") -> dict:
    model.eval()
    outputs = collect_outputs(model.forward_features, model.forward_head, loader, device, desc)
    logits, labels = outputs.logits, outputs.labels
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {"val_loss": loss, "val_top1": topk_accuracy(logits, labels, 1), "val_top5": topk_accuracy(logits, labels, 5)}


def end_of_epoch(row: dict, recipe: Recipe, model, model_ema, optimizer, scheduler, val_loader, device,
                 output_dir: Path, class_names, best: dict, eval_every: int) -> dict:
    """Rank 0: validate (every ``eval_every`` epochs and the last), write the checkpoints and the log line."""
    # With EMA on, the average is what gets validated, selected and exported (checkpoints.save_epoch).
    shipped = model_ema.module if model_ema is not None else model
    if row["epoch"] % eval_every == 0 or row["epoch"] == recipe.epochs:
        row.update(evaluate(shipped, val_loader, device))
        print(" ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items()),
              flush=True)
    best = save_epoch(output_dir, row, recipe, model, model_ema, optimizer, scheduler, class_names, best)
    append_log(output_dir / "log.csv", row)
    return best


def append_log(path: Path, row: dict) -> None:
    new_file = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)
