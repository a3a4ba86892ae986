"""Running a network over a DataLoader (shared by the trainer, the evaluator and the exporter)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.preprocess import PreprocessConfig
from ..core.gate import pooled_embedding, sharpness
from .data import Sample, eval_loader

Stage = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Outputs:
    """What a network gave for a list of images, in order (numpy arrays)."""

    logits: np.ndarray  # [N, K]
    embeddings: np.ndarray  # [N, C] pooled feature maps
    labels: np.ndarray  # [N], -1 where unknown
    imagenet_logits: np.ndarray | None = None  # [N, 1000], when the ImageNet view was asked for
    sharpness: np.ndarray | None = None  # [N] fine detail in each input (ood.sharpness: the too-small rule)

    def __len__(self) -> int:
        return len(self.labels)


@torch.inference_mode()
def collect_outputs(features: Stage, head: Stage, loader, device: torch.device = torch.device("cpu"),
                    desc: str = "eval", imagenet: Stage | None = None) -> Outputs:
    """Run the network over ``loader``.

    The network comes as its two halves, the split Grad-CAM needs too: the eager timm model passes
    ``forward_features``/``forward_head``, a TorchScript artifact its exported ``features``/``head`` (and
    ``imagenet_logits`` for the ImageNet view). The caller puts the network in eval mode.
    """
    logits, embeddings, labels, imagenet_logits, detail = [], [], [], [], []
    for images, targets in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        feature_map = features(images)
        logits.append(head(feature_map).float().cpu().numpy())
        embeddings.append(pooled_embedding(feature_map).cpu().numpy())
        labels.append(np.asarray(targets))
        detail.append(sharpness(images))
        if imagenet is not None:
            imagenet_logits.append(imagenet(images).float().cpu().numpy())
    return Outputs(np.concatenate(logits), np.concatenate(embeddings), np.concatenate(labels).astype(np.int64),
                   np.concatenate(imagenet_logits) if imagenet is not None else None, np.concatenate(detail))


def scripted_outputs(module, preprocess: PreprocessConfig, samples, workers: int = 2, desc: str = "eval",
                     imagenet: bool = True) -> Outputs:
    """A scripted network's (an artifact's) outputs for samples (``Sample``s or plain paths, label -1),
    preprocessed exactly as the app does; with the ImageNet view's logits when ``imagenet`` and the network has
    that view."""
    samples = [s if isinstance(s, Sample) else Sample(str(s), -1) for s in samples]
    view = module.imagenet_logits if imagenet and hasattr(module, "imagenet_logits") else None
    return collect_outputs(module.features, module.head, eval_loader(samples, preprocess, workers), desc=desc,
                           imagenet=view)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader, keep: list[torch.nn.Module] = (),
                          device: torch.device = torch.device("cpu")) -> int:
    """Recompute the BatchNorm running statistics from ``loader``'s images; return how many images were seen.

    Why: training sees 192 px random crops with TrivialAugment, the app sees clean 224 px centre crops, and the
    statistics gathered during training describe the former (the train/test discrepancy of Touvron et al.
    2019, "FixRes"). Cumulative averages over the whole loader replace them; the weights are untouched.
    BatchNorm layers inside ``keep`` (the stages frozen during training, which still hold ImageNet
    statistics) are left as they are. The model comes back in eval mode.
    """
    kept = {id(module) for part in keep for module in part.modules()}
    layers = [module for module in model.modules()
              if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and id(module) not in kept]
    saved_momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # None: a cumulative average, the same weight for every batch
    model.eval()
    for layer in layers:
        layer.train()  # only these update; dropout and stochastic depth stay off
    seen = 0
    for images, _ in tqdm(loader, desc="batchnorm statistics", leave=False, dynamic_ncols=True):
        model(images.to(device, non_blocking=True))
        seen += len(images)
    for layer, momentum in zip(layers, saved_momenta):
        layer.momentum = momentum
    model.eval()
    return seen
