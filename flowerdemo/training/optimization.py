"""What the trainer optimises and how: SGD with a faster head and no decay on norms and biases, the warm-up then
cosine schedule, the loss (class-balanced if asked), and the optional weight EMA and batch mixing (mixup/CutMix).
Each reads its settings from the recipe."""
from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from .recipe import Recipe, RecipeError


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """SGD with a faster head (timm's ``get_classifier()``); no weight decay on norms and biases (1-D tensors)."""
    head = {id(parameter) for parameter in model.get_classifier().parameters()}
    groups = {key: [] for key in ("backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay")}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if id(parameter) in head else "backbone"
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


def class_counts(labels, num_classes: int) -> torch.Tensor:
    counts = Counter(int(label) for label in labels)
    return torch.tensor([counts.get(index, 0) for index in range(num_classes)], dtype=torch.float64)


def balanced_loss_weights(labels, num_classes: int) -> torch.Tensor:
    """Per-class loss weights n / (K x count): every class weighs the same in total (scikit-learn's
    "balanced"); a class without training images gets weight 0 rather than infinity."""
    counts = class_counts(labels, num_classes)
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def build_criterion(recipe: Recipe, labels, num_classes: int, mixing: bool) -> nn.Module:
    # The mixer smooths its soft targets itself, so only the plain loss gets label smoothing.
    weight = balanced_loss_weights(labels, num_classes) if recipe.class_balance == "loss" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.0 if mixing else recipe.label_smoothing)


def build_model_ema(model: nn.Module, decay: float):
    """timm's weight EMA, or None when ``decay`` is 0. Warm-up keeps early averages from clinging to ImageNet."""
    if decay == 0.0:
        return None
    if not 0.0 < decay < 1.0:
        raise RecipeError(f"--model-ema-decay must be 0 (off) or in (0, 1), got {decay}")
    from timm.utils import ModelEmaV3  # timm: heavy to import, and only a run with EMA on needs this part

    # Warm-up power 3/4 rather than timm's default 2/3: runs here are ~2,000 steps, and 2/3 would cap the
    # window at ~160 steps (3 epochs); 3/4 averages over ~300.
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=0.75)


def build_batch_mixer(args, num_classes: int, train_size: int | None = None):
    """timm's Mixup/CutMix over whole batches, or None when both alphas are 0.

    The mixer makes soft targets and applies the label smoothing itself, so the loss becomes soft-target
    cross-entropy. ``train_acc`` is then measured against each mixed target's larger share.
    """
    if args.mixup_alpha < 0 or args.cutmix_alpha < 0:
        raise RecipeError(f"--mixup-alpha and --cutmix-alpha must be >= 0 (0 is off), got {args.mixup_alpha} "
                         f"and {args.cutmix_alpha}")
    if args.mixup_alpha == 0 and args.cutmix_alpha == 0:
        return None
    if not 0.0 < args.mix_prob <= 1.0:
        raise RecipeError(f"--mix-prob must be in (0, 1], got {args.mix_prob}")
    if args.batch_size % 2:
        raise RecipeError(f"mixup and CutMix pair each image with another: --batch-size must be even, got {args.batch_size}")
    if train_size is not None and train_size <= args.batch_size and train_size % 2:
        # the loader keeps a lone batch whole (drop_last is off then), so the set itself must pair up
        raise RecipeError(f"mixup and CutMix pair each image with another: {train_size} training images fit in one "
                         "batch and are an odd number; add or drop an image, or turn mixing off")
    from timm.data import Mixup  # timm: heavy to import, and only a run with mixing on needs this part

    return Mixup(mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, prob=args.mix_prob,
                 label_smoothing=args.label_smoothing, num_classes=num_classes)
