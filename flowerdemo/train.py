"""Fine-tune EfficientNet-Lite on Flowers-102 (or any ImageFolder tree).

Shaped like torchvision's references/classification/train.py: ``get_args_parser()``, ``main(args)``,
``train_one_epoch``, ``evaluate``. Every epoch writes ``checkpoint.pth`` (resumable with ``--resume``) and a
line of ``log.csv``; the best epoch on the validation split is kept as ``model_best.pth``. Export the result
with ``python -m flowerdemo.export``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__
from .data import DEFAULT_DATA_PATH, ImageListDataset, eval_loader, training_and_selection_samples
from .engine import collect_outputs
from .metrics import topk_accuracy
from .models import ARCHITECTURES, create_model, freeze_stem_and_stages
from .preprocess import PreprocessConfig, train_transform


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune a flower classifier", add_help=add_help)
    parser.add_argument("--data-path", default=str(DEFAULT_DATA_PATH),
                        help="Flowers-102 folder (labels.csv, classes.json, images/) or ImageFolder root with train/ and val/")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val", help="model selection happens on this split only")
    parser.add_argument("--val-fraction-for-training", type=float, default=0.0,
                        help="also train on this fraction of each val class (stratified, deterministic); selection, "
                             "calibration and the OOD threshold then use only the rest of val")
    parser.add_argument("--output-dir", default="runs/lite0", help="checkpoints and logs go here")
    parser.add_argument("--arch", default="tf_efficientnet_lite0", choices=sorted(ARCHITECTURES))
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (tests only)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02, help="backbone learning rate (SGD, nesterov)")
    parser.add_argument("--head-lr-scale", type=float, default=10.0, help="the new classifier learns this much faster")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-5, help="not applied to norms and biases")
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--drop-rate", type=float, default=0.2, help="dropout before the classifier")
    parser.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    parser.add_argument("--freeze-stages", type=int, default=2,
                        help="freeze the stem and this many early stages (saves ~35%% of CPU time)")
    parser.add_argument("--train-crop", type=int, default=192,
                        help="training resolution; lower than the 224 eval crop (FixRes) and faster")
    parser.add_argument("--min-scale", type=float, default=0.25, help="RandomResizedCrop's smallest area fraction")
    parser.add_argument("--augment", default="trivialaugment", choices=["trivialaugment", "colorjitter", "none"])
    parser.add_argument("--limit-per-class", type=int, default=None, help="use at most N images per class (smoke tests)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0 ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", default="", help="checkpoint.pth to continue from")
    parser.add_argument("--init-from", default="", help="start from the weights of an earlier run's model_best.pth "
                                                        "(fresh optimizer and schedule: a second fine-tuning stage)")
    parser.add_argument("--eval-every", type=int, default=2, help="validate every N epochs (and always the last)")
    parser.add_argument("--model-ema-decay", type=float, default=0.0,
                        help="keep an exponential moving average of the weights with this per-step decay (e.g. 0.998) "
                             "and validate, select and save the average instead of the raw weights; 0 turns it off")
    parser.add_argument("--mixup-alpha", type=float, default=0.0, help="mixup's Beta(alpha, alpha); 0 turns it off")
    parser.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix's Beta(alpha, alpha); 0 turns it off")
    parser.add_argument("--mix-prob", type=float, default=1.0,
                        help="fraction of batches that get mixup or CutMix (an even choice when both are on)")
    return parser


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """SGD with a faster head; no weight decay on norms and biases (1-D tensors)."""
    groups = {key: [] for key in ("backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay")}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if name.startswith("classifier.") else "backbone"
        groups[f"{part}_{'no_decay' if parameter.ndim <= 1 else 'decay'}"].append(parameter)
    param_groups = []
    for key, parameters in groups.items():
        if parameters:
            lr = args.lr * (args.head_lr_scale if key.startswith("head") else 1.0)
            decay = 0.0 if key.endswith("no_decay") else args.weight_decay
            param_groups.append({"params": parameters, "lr": lr, "weight_decay": decay, "name": key})
    return torch.optim.SGD(param_groups, lr=args.lr, momentum=args.momentum, nesterov=True)


def build_scheduler(optimizer, args, steps_per_epoch: int):
    """Linear warm-up, then cosine decay to zero, stepped every iteration."""
    warmup = int(args.warmup_epochs * steps_per_epoch)
    total = args.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model, criterion, optimizer, scheduler, loader, device, epoch, frozen_modules, args,
                    model_ema=None, batch_mixer=None) -> dict:
    model.train()
    for module in frozen_modules:  # frozen layers keep their ImageNet BatchNorm statistics
        module.eval()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.time()
    progress = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", dynamic_ncols=True)
    for images, targets in progress:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
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
            model_ema.update(model, step=scheduler.last_epoch)
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                             lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return {"train_loss": total_loss / seen, "train_acc": correct / seen, "epoch_seconds": time.time() - start}


def evaluate(model, loader, device, desc: str = "val") -> dict:
    model.eval()
    outputs = collect_outputs(model.forward_features, model.forward_head, loader, device, desc)
    logits, labels = outputs.logits, outputs.labels
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return {"val_loss": loss, "val_top1": topk_accuracy(logits, labels, 1), "val_top5": topk_accuracy(logits, labels, 5)}


def build_model_ema(model: nn.Module, decay: float):
    """timm's weight EMA, or None when ``decay`` is 0. Warm-up keeps early averages from clinging to ImageNet."""
    if decay == 0.0:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"--model-ema-decay must be 0 (off) or in (0, 1), got {decay}")
    from timm.utils import ModelEmaV3  # timm is a training dependency already (the architecture comes from it)

    # Warm-up power 3/4 rather than timm's default 2/3: runs here are ~2,000 steps, and 2/3 would cap the
    # window at ~160 steps (3 epochs); 3/4 averages over ~300.
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=0.75)


def build_batch_mixer(args, num_classes: int, train_size: int | None = None):
    """timm's Mixup/CutMix over whole batches, or None when both alphas are 0.

    The mixer makes soft targets and applies the label smoothing itself, so the loss becomes soft-target
    cross-entropy. ``train_acc`` is then measured against each mixed target's larger share.
    """
    if args.mixup_alpha < 0 or args.cutmix_alpha < 0:
        raise ValueError(f"--mixup-alpha and --cutmix-alpha must be >= 0 (0 is off), got {args.mixup_alpha} "
                         f"and {args.cutmix_alpha}")
    if args.mixup_alpha == 0 and args.cutmix_alpha == 0:
        return None
    if not 0.0 < args.mix_prob <= 1.0:
        raise ValueError(f"--mix-prob must be in (0, 1], got {args.mix_prob}")
    if args.batch_size % 2:
        raise ValueError(f"mixup and CutMix pair each image with another: --batch-size must be even, got {args.batch_size}")
    if train_size is not None and train_size <= args.batch_size and train_size % 2:
        # the loader keeps a lone batch whole (drop_last is off then), so the set itself must pair up
        raise ValueError(f"mixup and CutMix pair each image with another: {train_size} training images fit in one "
                         "batch and are an odd number; add or drop an image, or turn mixing off")
    from timm.data import Mixup

    return Mixup(mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, prob=args.mix_prob,
                 label_smoothing=args.label_smoothing, num_classes=num_classes)


def make_loaders(args, preprocess: PreprocessConfig):
    train_samples, val_samples, class_names = training_and_selection_samples(
        args.data_path, args.train_split, args.val_split, args.val_fraction_for_training, args.limit_per_class)
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        ImageListDataset(train_samples, train_transform(preprocess, args.train_crop, args.min_scale, args.augment)),
        batch_size=args.batch_size, shuffle=True, drop_last=len(train_samples) > args.batch_size,
        num_workers=args.workers, persistent_workers=args.workers > 0, generator=generator,
        worker_init_fn=_seed_worker,
    )
    val_loader = eval_loader(val_samples, preprocess, args.workers, batch_size=64)
    return train_loader, val_loader, class_names


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def save_checkpoint(path: Path, **state) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)  # never leave a half-written checkpoint behind a crash


def main(args) -> dict:
    seed_everything(args.seed)
    device = resolve_device(args.device)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    preprocess = PreprocessConfig()
    train_loader, val_loader, class_names = make_loaders(args, preprocess)
    print(f"flowerdemo {__version__}: {len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, "
          f"{len(class_names)} classes, device {device}")

    model = create_model(args.arch, len(class_names), pretrained=not args.no_pretrained, drop_rate=args.drop_rate,
                         drop_path_rate=args.drop_path, preprocess=preprocess)
    if args.init_from:
        model.load_state_dict(torch.load(args.init_from, map_location="cpu", weights_only=False)["model"])
        print(f"initialised from {args.init_from}")
    frozen = freeze_stem_and_stages(model, args.freeze_stages)
    model.to(device)
    batch_mixer = build_batch_mixer(args, len(class_names), len(train_loader.dataset))
    # The mixer smooths its soft targets itself, so only the plain loss gets label smoothing.
    criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if batch_mixer is not None else args.label_smoothing)
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args, len(train_loader))

    model_ema = build_model_ema(model, args.model_ema_decay)
    start_epoch, best = 0, {"val_top1": -1.0}
    if args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
        model.load_state_dict(checkpoint["raw_model"] if model_ema is not None else checkpoint["model"])
        if model_ema is not None:
            model_ema.module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        torch.set_rng_state(checkpoint["rng_state"])
        start_epoch, best = checkpoint["epoch"] + 1, checkpoint["best"]
        print(f"resumed from {args.resume} at epoch {start_epoch + 1}")
    (output_dir / "args.json").write_text(json.dumps(vars(args), indent=2))

    for epoch in range(start_epoch, args.epochs):
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(model, criterion, optimizer, scheduler, train_loader, device, epoch, frozen, args,
                                   model_ema, batch_mixer))
        # With EMA on, the average is what gets validated, selected and exported: "model" always holds
        # the weights to ship, so export and --init-from need not know whether EMA was used.
        shipped = model_ema.module if model_ema is not None else model
        is_last = epoch + 1 == args.epochs
        if (epoch + 1) % args.eval_every == 0 or is_last:
            row.update(evaluate(shipped, val_loader, device))
            print(" ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items()))
        state = {"model": shipped.state_dict(), "args": vars(args), "class_names": class_names,
                 "preprocess": preprocess.to_dict(), "epoch": epoch, "metrics": row}
        if row.get("val_top1", -1.0) > best["val_top1"]:
            best = dict(row)
            save_checkpoint(output_dir / "model_best.pth", **state, best=best)
        resume_state = {"raw_model": model.state_dict()} if model_ema is not None else {}
        save_checkpoint(output_dir / "checkpoint.pth", **state, **resume_state, best=best,
                        optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                        rng_state=torch.get_rng_state())
        _append_log(output_dir / "log.csv", row)
    print(f"best val top-1 {best['val_top1']:.4f} at epoch {best.get('epoch')}; weights in {output_dir / 'model_best.pth'}")
    return best


def _append_log(path: Path, row: dict) -> None:
    columns = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "epoch_seconds"]
    new_file = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
