"""The trainer's data loaders: the training loader (this process's shard of every epoch, class-balanced if asked,
augmented as the recipe says) and the validation loader (the app's own eval transform)."""
from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler

from ..core.preprocess import train_transform
from .augment import photo_steps
from .data import ImageListDataset, eval_loader
from .distributed import Processes
from .recipe import Recipe, RunOptions


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
        before, after = photo_steps()
    return train_transform(recipe.preprocess, recipe.train_crop, recipe.min_scale, recipe.augment, before, after)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
