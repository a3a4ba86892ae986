"""Running a model over a DataLoader (shared by the trainer, the evaluator and the exporter)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def collect_logits(model, loader, device: torch.device, desc: str = "eval", method: str = "forward"):
    """Logits (and labels) for every batch of ``loader``, as float32 numpy arrays, in loader order.

    ``method`` names the module method to call, e.g. ``"forward"`` or a TorchScript-exported one.
    """
    model.eval()
    run = getattr(model, method)
    outputs, labels = [], []
    for images, targets in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        outputs.append(run(images.to(device, non_blocking=True)).float().cpu().numpy())
        labels.append(np.asarray(targets))
    return np.concatenate(outputs), np.concatenate(labels).astype(np.int64)
