"""The network a model folder ships: :class:`FlowerNet` (the fine-tuned backbone, the frozen ImageNet view and
the k-NN bank in one module), scripted to TorchScript, checked against what the app relies on, and saved.

The artifact's metadata and its loading live in :mod:`flowerdemo.core.artifact`; this is the network side.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.artifact import ModelMetadata, quiet_torchscript, save_artifact
from .errors import ExportError
from .models import IMAGENET_CLASSES

BANK_DTYPE = torch.float16  # halves the bank's share of model.pt; cosine similarity does not need more
IMAGENET_VIEW_DTYPE = torch.float16  # the frozen ImageNet copy is stored in half precision (model.pt <= 32 MB)


class FlowerNet(nn.Module):
    """What gets scripted: ``forward == head(features(x))``, the k-NN feature bank (and each bank image's class)
    as buffers, and ``imagenet_logits(x)``: the frozen ImageNet network's 1,000 logits for the same input."""

    __constants__ = ["mirror_average"]  # a scripted constant: the unused branch compiles away

    def __init__(self, backbone: nn.Module, imagenet: nn.Module, ood_bank: torch.Tensor | None = None,
                 bank_labels: torch.Tensor | None = None, mirror_average: bool = False):
        super().__init__()
        self.backbone = backbone
        self.imagenet = imagenet
        self.mirror_average = mirror_average
        width = backbone.num_features
        bank = ood_bank.to(BANK_DTYPE) if ood_bank is not None else torch.zeros(0, width, dtype=BANK_DTYPE)
        labels = bank_labels if bank_labels is not None else torch.zeros(len(bank), dtype=torch.int64)
        if len(labels) != len(bank):
            raise ValueError(f"the bank has {len(bank)} rows but {len(labels)} labels")
        self.register_buffer("ood_bank", bank)
        self.register_buffer("ood_bank_labels", labels.to(torch.int16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised images -> last feature map [B, C, h, w] (Grad-CAM's layer).

        With ``mirror_average`` the map is the mean of the photo's map and its mirror image's map flipped back,
        so both describe the same positions: Grad-CAM still points at the right place, and because the head
        is a pool and a linear layer, the logits are exactly the mean of the two views' logits.
        """
        if not self.mirror_average:
            return self.backbone.forward_features(x)
        # Two passes, not one batch of 2B: on a 2-core CPU, batch 1 twice took 19 ms against 26 ms for a batch of 2.
        plain = self.backbone.forward_features(x)
        mirrored = self.backbone.forward_features(x.flip(3)).flip(3)
        return 0.5 * (plain + mirrored)

    @torch.jit.export
    def head(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits [B, num_classes] (global pool, classifier)."""
        return self.backbone.forward_head(feature_map)

    @torch.jit.export
    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalised images -> the frozen ImageNet network's logits [B, 1000] (one view, no mirror)."""
        return self.imagenet(x)


def script_model(backbone: nn.Module, imagenet: nn.Module, ood_bank: torch.Tensor | None = None,
                 bank_labels: torch.Tensor | None = None, mirror_average: bool = False) -> torch.jit.ScriptModule:
    network = FlowerNet(backbone.eval(), imagenet.eval(), ood_bank, bank_labels, mirror_average).eval()
    try:
        with quiet_torchscript():
            return torch.jit.script(network)
    except (RuntimeError, torch.jit.frontend.FrontendError) as error:
        raise ExportError(f"this architecture cannot be scripted to TorchScript, which the app loads "
                          f"({str(error).splitlines()[0][:300]}); choose another timm CNN") from None


@torch.no_grad()
def check_contract(scripted: torch.jit.ScriptModule, crop: int) -> None:
    """What the app, Grad-CAM and the verdict rule rely on, whatever the architecture: ``features`` is a
    [B, C, H, W] map, ``forward == head(features)``, and the ImageNet view gives 1,000 logits."""
    x = torch.randn(2, 3, crop, crop)
    features = scripted.features(x)
    if features.ndim != 4:
        raise ExportError(f"features() gives shape {list(features.shape)}; the app needs a [B, C, H, W] map")
    if not torch.allclose(scripted(x), scripted.head(features), rtol=1e-4, atol=1e-4):
        raise ExportError("forward(x) differs from head(features(x)); Grad-CAM would explain another network")
    width = scripted.imagenet_logits(x).shape[-1]
    if width != IMAGENET_CLASSES:
        raise ExportError(f"the ImageNet view gives {width} logits, not ImageNet-1k's {IMAGENET_CLASSES}")


def round_to_storage_precision(imagenet: nn.Module) -> nn.Module:
    """The ImageNet view as it will compute after the half-precision round trip of ``model.pt``, so every
    threshold is fitted on exactly the numbers the app will see."""
    return imagenet.to(IMAGENET_VIEW_DTYPE).float().eval()


def save_model(scripted: torch.jit.ScriptModule, metadata: ModelMetadata, path: Path) -> None:
    """Save with the ImageNet view in half precision (the loader brings it back to float32)."""
    scripted.imagenet.to(IMAGENET_VIEW_DTYPE)
    try:
        save_artifact(scripted, metadata, path)
    finally:
        scripted.imagenet.float()
