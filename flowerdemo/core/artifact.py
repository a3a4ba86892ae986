"""The self-describing model artifact: a TorchScript file whose extra file ``flowerdemo.json`` says everything
needed to use it (class names, preprocessing, calibration temperature, the verdict rule and its ImageNet class
names, prediction sets, metrics...).

``torch.jit.load(path, _extra_files={"flowerdemo.json": ""})`` is enough to use a model correctly; the frozen
ImageNet view is stored in half precision (``model.imagenet.float()`` once after loading, as ``load_artifact``
does).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .conformal import ConformalConfigError, ConformalSets
from .model_file import METADATA_FILE, MODEL_FILE, ModelLoadError
from .gate import FlowerGate, GateConfigError
from .preprocess import PreprocessConfig, PreprocessConfigError
from .ranks import PhotoGroups, RankConfigError, RankRule
from .taxonomy import Taxonomy, TaxonomyError

# 2: the verdict rule (ImageNet view + k-NN), prediction sets and ImageNet class names replace format 1's
# single-score "ood" rule. Format 1 files are refused with the command that upgrades them.
FORMAT_VERSION = 2
REQUIRED_METHODS = ("forward", "features", "head")
GATE_METHODS = ("imagenet_logits",)
REEXPORT_HINT = (
    "python -m flowerdemo.training.export --from-model OLD_MODEL_FOLDER --nonflowers-path NONFLOWER_PHOTOS --output NEW_MODEL_FOLDER")
# What the network does inside features() beyond one plain pass; informational: the file does it itself.
TEST_TIME_AUGMENTATIONS = ("none", "hflip_mean")




@dataclass(frozen=True)
class ModelMetadata:
    class_names: tuple
    preprocess: PreprocessConfig
    arch: str
    format_version: int = FORMAT_VERSION
    temperature: float = 1.0
    gate: FlowerGate | None = None  # None: no "not a flower" check, every photo gets the closest species
    imagenet_class_names: tuple = ()  # the ImageNet view's classes, for "it looks like a beagle"
    prediction_sets: ConformalSets | None = None
    metrics: dict = field(default_factory=dict)
    training_args: dict = field(default_factory=dict)
    flowerdemo_version: str = ""
    test_time_augmentation: str = "none"
    # Optional (older models have none): who each class is, the groups of photos the rules are fitted per,
    # and the deepest-rank-sure-enough rule. Without a taxonomy the model answers at species rank only.
    taxonomy: Taxonomy | None = None
    photo_groups: PhotoGroups | None = None
    ranks: RankRule | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "temperature": self.temperature,
            "gate": self.gate.to_dict() if self.gate else None,
            "imagenet_class_names": list(self.imagenet_class_names),
            "prediction_sets": self.prediction_sets.to_dict() if self.prediction_sets else None,
            "metrics": self.metrics,
            "training_args": self.training_args,
            "flowerdemo_version": self.flowerdemo_version,
            "test_time_augmentation": self.test_time_augmentation,
            "taxonomy": self.taxonomy.to_dict() if self.taxonomy else None,
            "photo_groups": self.photo_groups.to_dict() if self.photo_groups else None,
            "ranks": self.ranks.to_dict() if self.ranks else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelMetadata":
        """Validate untrusted metadata; every problem is a :class:`ModelLoadError` that says what is wrong."""
        if not isinstance(data, dict):
            raise ModelLoadError(f"{METADATA_FILE} must hold a JSON object, got {type(data).__name__}")
        missing = [key for key in ("format_version", "arch", "class_names", "preprocess") if key not in data]
        if missing:
            raise ModelLoadError(f"{METADATA_FILE} is missing {', '.join(missing)}; re-export the model with flowerdemo.training.export")
        if data["format_version"] == 1:
            raise ModelLoadError(
                f"this model was exported by an older flowerdemo (format 1: no ImageNet view, no prediction sets); "
                f"re-export it from its own weights with: {REEXPORT_HINT}"
            )
        if data["format_version"] != FORMAT_VERSION:
            raise ModelLoadError(
                f"{METADATA_FILE} format_version {data['format_version']!r} is not supported (this flowerdemo reads "
                f"{FORMAT_VERSION}); upgrade flowerdemo or re-export the model"
            )
        names = data["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ModelLoadError(f"{METADATA_FILE}: class_names must be a non-empty list of non-empty strings")
        if len(set(names)) != len(names):
            raise ModelLoadError(f"{METADATA_FILE}: class_names has duplicates")
        try:
            preprocess = PreprocessConfig.from_dict(data["preprocess"])
        except (PreprocessConfigError, TypeError) as error:
            raise ModelLoadError(f"{METADATA_FILE}: {error}") from None
        temperature = data.get("temperature", 1.0)
        if not _is_number(temperature) or not 0.05 <= temperature <= 20:
            raise ModelLoadError(f"{METADATA_FILE}: temperature must be a number in [0.05, 20], got {temperature!r}")
        try:
            gate = FlowerGate.from_dict(data["gate"]) if data.get("gate") is not None else None
            sets = ConformalSets.from_dict(data["prediction_sets"]) if data.get("prediction_sets") is not None else None
        except (GateConfigError, ConformalConfigError) as error:
            raise ModelLoadError(f"{METADATA_FILE}: {error}") from None
        imagenet_names = data.get("imagenet_class_names") or []
        if not isinstance(imagenet_names, list) or not all(isinstance(n, str) and n for n in imagenet_names):
            raise ModelLoadError(f"{METADATA_FILE}: imagenet_class_names must be a list of non-empty strings")
        if gate is not None and len(imagenet_names) != gate.imagenet_classes:
            raise ModelLoadError(f"{METADATA_FILE}: the gate weighs {gate.imagenet_classes} ImageNet classes but "
                                 f"imagenet_class_names lists {len(imagenet_names)}")
        augmentation = data.get("test_time_augmentation", "none")
        if augmentation not in TEST_TIME_AUGMENTATIONS:
            raise ModelLoadError(f"{METADATA_FILE}: test_time_augmentation must be one of "
                                 f"{', '.join(TEST_TIME_AUGMENTATIONS)}, got {augmentation!r}")
        taxonomy, groups, ranks = _rank_parts(data, tuple(names), gate, sets)
        return cls(
            class_names=tuple(names),
            preprocess=preprocess,
            arch=str(data["arch"]),
            format_version=FORMAT_VERSION,
            temperature=float(temperature),
            gate=gate,
            imagenet_class_names=tuple(imagenet_names),
            prediction_sets=sets,
            metrics=data.get("metrics") or {},
            training_args=data.get("training_args") or {},
            flowerdemo_version=str(data.get("flowerdemo_version", "")),
            test_time_augmentation=augmentation,
            taxonomy=taxonomy,
            photo_groups=groups,
            ranks=ranks,
        )


def _rank_parts(data: dict, class_names: tuple, gate, sets) -> tuple:
    """(taxonomy, photo groups, rank rule) from metadata, each None where absent, checked against each other:
    every per-group rule must have one entry per group."""
    try:
        taxonomy = Taxonomy.from_dict(data["taxonomy"]) if data.get("taxonomy") is not None else None
        groups = PhotoGroups.from_dict(data["photo_groups"]) if data.get("photo_groups") is not None else None
        ranks = RankRule.from_dict(data["ranks"]) if data.get("ranks") is not None else None
        if taxonomy is not None:
            taxonomy.check_matches(class_names)
    except (TaxonomyError, RankConfigError) as error:
        raise ModelLoadError(f"{METADATA_FILE}: {error}") from None
    group_count = groups.count if groups is not None else 1
    per_group = {"ranks.thresholds": len(ranks.thresholds) if ranks else group_count,
                 "prediction_sets.qhat_by_group": len(sets.qhat_by_group) if sets and sets.qhat_by_group else group_count,
                 "gate.unknown_threshold_by_group": (len(gate.unknown_threshold_by_group)
                                                     if gate and gate.unknown_threshold_by_group else group_count)}
    wrong = [name for name, count in per_group.items() if count != group_count]
    if wrong:
        raise ModelLoadError(f"{METADATA_FILE}: {', '.join(wrong)} must have one entry per photo group ({group_count})")
    if ranks is not None and taxonomy is None:
        raise ModelLoadError(f"{METADATA_FILE}: a rank rule needs the taxonomy it rolls up")
    return taxonomy, groups, ranks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@contextmanager
def quiet_torchscript():
    """torch >= 2.15 marks torch.jit deprecated with a FutureWarning; TorchScript is what we ship, so keep
    users' consoles clean. Only that warning category from torch.jit is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        yield


def save_artifact(module: torch.jit.ScriptModule, metadata: ModelMetadata, path: str | os.PathLike) -> None:
    with quiet_torchscript():
        torch.jit.save(module, str(path), _extra_files={METADATA_FILE: metadata.to_json()})


def load_artifact(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, ModelMetadata]:
    """Load a TorchScript model file (never a pickle) and validate its metadata against the network."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file not found: {path}")
    extra = {METADATA_FILE: ""}
    try:
        with quiet_torchscript():
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelLoadError(
            f"{path} is not a TorchScript model ({str(error).splitlines()[0][:200]}); export one with flowerdemo.training.export"
        ) from None
    if not extra[METADATA_FILE]:
        raise ModelLoadError(f"{path} has no {METADATA_FILE} metadata; export it with flowerdemo.training.export")
    try:
        data = json.loads(extra[METADATA_FILE])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: {METADATA_FILE} is not valid JSON ({error})") from None
    metadata = ModelMetadata.from_dict(data)
    for method in REQUIRED_METHODS + (GATE_METHODS if metadata.gate else ()):
        if not hasattr(module, method):
            raise ModelLoadError(f"{path} lacks the exported method {method}(); export it with flowerdemo.training.export")
    module.eval()
    if metadata.gate is not None and hasattr(module, "imagenet"):
        module.imagenet.float()  # stored in half precision to keep the file small; computed in full precision
    _check_output_width(module, metadata, path)
    _check_test_time_augmentation(module, metadata, path)
    return module, metadata


def _check_test_time_augmentation(module, metadata: ModelMetadata, path: str) -> None:
    """flowerdemo's exporter scripts ``mirror_average`` as a constant; the metadata must describe it truly.

    Another exporter's network need not carry the constant, and then the metadata is taken at its word.
    """
    mirror_average = getattr(module, "mirror_average", None)
    if isinstance(mirror_average, bool) and mirror_average != (metadata.test_time_augmentation == "hflip_mean"):
        raise ModelLoadError(
            f"{path}: the network {'does' if mirror_average else 'does not'} average each photo with its mirror image "
            f"but the metadata says test_time_augmentation={metadata.test_time_augmentation!r}; "
            "the file and its metadata do not belong together"
        )


def _check_output_width(module, metadata: ModelMetadata, path: str) -> None:
    probe = torch.zeros(1, 3, metadata.preprocess.crop, metadata.preprocess.crop)
    try:
        with torch.inference_mode():
            logits = module.head(module.features(probe))
    except RuntimeError as error:
        raise ModelLoadError(f"{path}: the network fails on a {metadata.preprocess.crop}px input: {str(error)[:200]}") from None
    if logits.ndim != 2 or logits.shape[1] != metadata.num_classes:
        raise ModelLoadError(
            f"{path}: the network outputs {tuple(logits.shape)} logits but the metadata names "
            f"{metadata.num_classes} classes; the file and its metadata do not belong together"
        )
    if metadata.gate is not None:
        with torch.inference_mode():
            width = module.imagenet_logits(probe).shape[-1]
        if width != metadata.gate.imagenet_classes:
            raise ModelLoadError(f"{path}: the ImageNet view outputs {width} classes but the metadata names "
                                 f"{metadata.gate.imagenet_classes}; the file and its metadata do not belong together")
