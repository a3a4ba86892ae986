"""Where trained weights come from: a trainer checkpoint, or the network inside an earlier exported model.

The exporter turns a :class:`Source` into a model folder; the trainer (``--init-from``) and WiSE-FT start from
:func:`initial_weights`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.artifact import METADATA_FILE, quiet_torchscript
from ..core.preprocess import PreprocessConfig
from ..serve.hub import parse_source, resolve_model_file
from .checkpoints import CheckpointError, load_checkpoint
from .errors import ExportError
from .models import create_model
from .recipe import Recipe, RecipeError


@dataclass
class Source:
    """The trained network and what the exporter needs to know about it."""

    backbone: nn.Module
    class_names: list
    recipe: Recipe
    epoch: int  # selected epoch, 1-based (-1 unknown)
    batchnorm: dict  # already recalibrated? (an artifact's own record)
    mirror_average: bool | None = None  # what an earlier artifact did; None for checkpoints

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.recipe.preprocess


def stored_recipe(data: dict, preprocess: PreprocessConfig | None = None) -> Recipe:
    """The recipe a checkpoint or an artifact carries; an older flowerdemo's training arguments (with run
    options and machine paths in them) are reduced to their recipe fields."""
    try:
        return Recipe.from_dict(data)
    except (RecipeError, TypeError):
        if preprocess is None:
            raise
        return Recipe.from_legacy_args(data, preprocess)


def build_backbone(recipe: Recipe, num_classes: int, state: dict) -> nn.Module:
    """The trained network, rebuilt scriptable (timm swaps in TorchScript-friendly layers) with its weights."""
    backbone = create_model(recipe.arch, num_classes, pretrained=False, scriptable=True)
    backbone.load_state_dict(state)
    return backbone.eval()


def load_checkpoint_backbone(path: str | Path) -> tuple[nn.Module, list, Recipe, dict]:
    """(backbone, class_names, recipe, raw checkpoint) from a trainer checkpoint (read with weights_only=True)."""
    checkpoint = load_checkpoint(path)
    class_names = list(checkpoint["class_names"])
    if "recipe" in checkpoint:
        recipe = Recipe.from_dict(checkpoint["recipe"])
    else:  # an older trainer's checkpoint: all arguments under "args", the preprocessing beside them
        recipe = Recipe.from_legacy_args(checkpoint["args"], PreprocessConfig.from_dict(checkpoint["preprocess"]))
    return build_backbone(recipe, len(class_names), checkpoint["model"]), class_names, recipe, checkpoint


def source_from_checkpoint(path: str | Path) -> Source:
    backbone, class_names, recipe, checkpoint = load_checkpoint_backbone(path)
    # a probe's checkpoint (training/probe.py) carries its source model's BatchNorm record and mirror averaging
    return Source(backbone, class_names, recipe, checkpoint.get("epoch", -2) + 1,
                  checkpoint.get("batchnorm") or {"recalibrated": False}, checkpoint.get("mirror_average"))


def source_from_model(path: str | Path) -> Source:
    """The network inside an earlier artifact (any format version), to re-export it with this flowerdemo.

    Not through :func:`~flowerdemo.core.artifact.load_artifact`, on purpose: it refuses the older formats
    (format 1) and points their owners here, so upgrading exactly those files is this function's job. Only the
    backbone's weights and the metadata fields that rebuild it (class names, recipe, preprocessing) are read;
    the network is rebuilt from the architecture and never run as loaded.
    """
    file = resolve_model_file(parse_source(str(path)))
    extra = {METADATA_FILE: ""}
    try:
        with quiet_torchscript():
            module = torch.jit.load(file, map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as error:
        raise ExportError(f"{file} is not a TorchScript model ({str(error).splitlines()[0][:200]})") from None
    try:
        meta = json.loads(extra[METADATA_FILE])
        class_names, args = list(meta["class_names"]), dict(meta["training_args"])
        args.setdefault("arch", meta["arch"])
        recipe = stored_recipe(args, PreprocessConfig.from_dict(meta["preprocess"]))
    except (ValueError, KeyError, TypeError) as error:  # RecipeError and PreprocessConfigError are ValueErrors
        raise ExportError(f"{file} has no usable {METADATA_FILE} ({error}); export it from its checkpoint instead") from None
    state = {key.removeprefix("backbone."): value for key, value in module.state_dict().items()
             if key.startswith("backbone.")}
    metrics = meta.get("metrics") or {}
    return Source(build_backbone(recipe, len(class_names), state), class_names, recipe,
                  int((metrics.get("val") or {}).get("epoch", -1)),
                  metrics.get("batchnorm") or {"recalibrated": False},
                  meta.get("test_time_augmentation", "none") == "hflip_mean")


def initial_weights(path: str) -> dict:
    """--init-from: a trainer checkpoint's weights, or the network inside an exported model (folder or model.pt)."""
    candidate = Path(path)
    if candidate.is_dir() or candidate.suffix == ".pt":
        try:
            return source_from_model(path).backbone.state_dict()
        except ExportError as error:
            raise CheckpointError(str(error)) from None
    return load_checkpoint(path)["model"]
