"""Running a network over a DataLoader (shared by the trainer, the evaluator and the exporter)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .ood import pooled_embedding

Stage = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def collect_outputs(features: Stage, head: Stage, loader, device: torch.device = torch.device("cpu"),
                    desc: str = "eval"):
    """(logits [N, K], pooled embeddings [N, C], labels [N]) as numpy arrays, in loader order.

    The network comes as its two halves, the split Grad-CAM needs too: the eager timm model passes
    ``forward_features``/``forward_head``, a TorchScript artifact its exported ``features``/``head``.
    The caller puts the network in eval mode.
    """
    logits, embeddings, labels = [], [], []
    for images, targets in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        feature_map = features(images.to(device, non_blocking=True))
        logits.append(head(feature_map).float().cpu().numpy())
        embeddings.append(pooled_embedding(feature_map).cpu().numpy())
        labels.append(np.asarray(targets))
    return np.concatenate(logits), np.concatenate(embeddings), np.concatenate(labels).astype(np.int64)
