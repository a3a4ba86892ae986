"""The training recipe: what makes a model what it is, as a typed record with no machine paths in it.

Kept apart from the run options (where the data and the outputs are, which device, how many loader workers):
the recipe travels in every checkpoint and in the exported model's metadata, and a resumed run must agree with
it; run options describe one machine and never leave it. Only plain types are stored, so checkpoints load with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..core.preprocess import PreprocessConfig
from .field import FieldSplit

AUGMENTS = ("trivialaugment", "colorjitter", "none")
CLASS_BALANCES = ("none", "sampler", "loss")
# Fields a resumed run may change: more epochs extend the same run (the schedule is stepped per iteration).
MAY_CHANGE_ON_RESUME = ("epochs",)
# Command-line spelling of fields whose flag is not simply --field-name.
FLAG_NAMES = {"pretrained": "--no-pretrained", "world_size": "torchrun --nproc_per_node",
              "probe_l2": "flowerdemo probe (--l2)", "probe_extra_data": "flowerdemo probe --extra-data",
              "probe_training_share": "flowerdemo probe --training-share",
              "preprocess": "--arch (its pretrained preprocessing)"}


class RecipeError(ValueError):
    """A recipe value is invalid, or a resumed run's command line disagrees with its checkpoint."""


@dataclass(frozen=True)
class Recipe:
    # architecture
    arch: str
    preprocess: PreprocessConfig  # the eval transform, from the architecture's pretrained config
    pretrained: bool = True
    freeze_stages: int = 2
    drop_rate: float = 0.2
    drop_path: float = 0.1
    # augmentation
    train_crop: int = 192
    min_scale: float = 0.25
    augment: str = "trivialaugment"
    photo_augment: bool = False  # small/soft photos, zoom-out, squash, grayscale (training/augment.py)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    # schedule
    epochs: int = 30
    batch_size: int = 32  # per process; the global batch is batch_size * world_size
    world_size: int = 1
    lr: float = 0.02
    head_lr_scale: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    model_ema_decay: float = 0.0
    class_balance: str = "none"
    seed: int = 0
    # data splits
    train_split: str = "train"
    val_split: str = "val"
    val_fraction_for_training: float = 0.0
    limit_per_class: int | None = None
    # photos from other collections (--extra-data): which ones (folder names, never paths) and how each is shared
    # out by a hash of its file name (training/field.py): this share trained on, this share kept for calibration,
    # the rest only ever reported on
    extra_data: tuple = ()
    field_train_fraction: float = 0.5
    field_calibration_fraction: float = 0.2
    # after training, the classifier head refitted on the frozen embeddings (training/probe.py): the pull toward
    # the trained head it chose (None: never probed), the share of the loss the training collection carried, and
    # the collections whose training share it learnt from
    probe_l2: float | None = None
    probe_training_share: float | None = None
    probe_extra_data: tuple = ()

    def __post_init__(self) -> None:
        if not isinstance(self.preprocess, PreprocessConfig):
            object.__setattr__(self, "preprocess", PreprocessConfig.from_dict(self.preprocess))
        _choice("augment", self.augment, AUGMENTS)
        _choice("class_balance", self.class_balance, CLASS_BALANCES)
        for name in ("epochs", "batch_size", "world_size", "train_crop"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise RecipeError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.limit_per_class is not None and self.limit_per_class < 1:
            raise RecipeError(f"limit_per_class must be a positive integer or unset, got {self.limit_per_class!r}")
        if not 0.0 <= self.val_fraction_for_training < 1.0:
            raise RecipeError(f"val_fraction_for_training must be in [0, 1), got {self.val_fraction_for_training}")
        object.__setattr__(self, "extra_data", tuple(self.extra_data))
        object.__setattr__(self, "probe_extra_data", tuple(self.probe_extra_data))
        if self.probe_l2 is not None and not self.probe_l2 > 0:
            raise RecipeError(f"probe_l2 must be a positive number or unset, got {self.probe_l2!r}")
        try:
            FieldSplit(self.field_train_fraction, self.field_calibration_fraction)
        except ValueError as error:
            raise RecipeError(str(error)) from None
        if self.freeze_stages < 0:
            raise RecipeError(f"freeze_stages must be >= 0, got {self.freeze_stages}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["extra_data"] = list(self.extra_data)
        data["probe_extra_data"] = list(self.probe_extra_data)
        return data

    @property
    def field_split(self):
        """How photos from elsewhere are shared out (training/field.py)."""
        return FieldSplit(self.field_train_fraction, self.field_calibration_fraction)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        """A recipe written by this flowerdemo (a checkpoint's or an artifact's); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecipeError(f"unknown recipe fields {', '.join(unknown)}; this flowerdemo knows {', '.join(sorted(names))}")
        return cls(**dict(data))

    @classmethod
    def from_legacy_args(cls, args: Mapping[str, Any], preprocess: PreprocessConfig) -> "Recipe":
        """The recipe inside the training arguments an older flowerdemo stored (run options and all): recipe
        fields are kept, everything else (paths, workers, device...) is dropped."""
        names = {f.name for f in fields(cls)}
        kept = {key: value for key, value in args.items() if key in names and key != "preprocess"}
        if "no_pretrained" in args:
            kept["pretrained"] = not args["no_pretrained"]
        if kept.get("train_crop") is None:
            kept.pop("train_crop", None)
        return cls(preprocess=preprocess, **kept)

    def differences(self, other: "Recipe") -> list[str]:
        """Human-readable ``--flag: ours vs theirs`` for every field that differs (``self`` is the stored one)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{flag_name(name)}: {mine[name]!r} in the checkpoint, {theirs[name]!r} now"
                for name in mine if mine[name] != theirs[name]]

    def check_resume(self, command_line: "Recipe", checkpoint: str) -> None:
        """Refuse to resume with a different recipe: a resumed run must be the run it continues."""
        fixed = {name: getattr(command_line, name) for name in MAY_CHANGE_ON_RESUME}
        if command_line.epochs < self.epochs:
            raise RecipeError(f"{checkpoint} was planned for {self.epochs} epochs; --epochs may grow on resume, "
                              f"not shrink (got {command_line.epochs})")
        differences = replace(self, **fixed).differences(command_line)
        if differences:
            raise RecipeError(f"{checkpoint} was trained with another recipe ({'; '.join(differences)}). Resume "
                              "with the same options (only --epochs may grow), or start a new --output-dir")


def flag_name(field_name: str) -> str:
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise RecipeError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class RunOptions:
    """Where and how this run happens on this machine; never stored with the model."""

    dataset: str = "flowers102"
    data_path: str = "data"
    download: bool = False
    output_dir: str = "runs/lite0"
    resume: str = ""
    init_from: str = ""
    pretrained_file: str = ""
    workers: int = 2
    device: str = "auto"
    extra_data_paths: tuple = ()  # --extra-data folders (paths: the recipe keeps their names only, extra_data)
    eval_every: int = 2  # how often this run looks at val; the weights it trains do not depend on it


def run_options_from_args(args: argparse.Namespace) -> RunOptions:
    values = {f.name: getattr(args, f.name, f.default) for f in fields(RunOptions) if f.name != "extra_data_paths"}
    values["extra_data_paths"] = tuple(str(path) for path in getattr(args, "extra_data", None) or ())
    return RunOptions(**values)


def recipe_from_args(args: argparse.Namespace, preprocess: PreprocessConfig, train_crop: int,
                     world_size: int) -> Recipe:
    """The recipe a command line asks for; ``preprocess`` and ``train_crop`` come resolved from the architecture."""
    derived = {"preprocess": preprocess, "train_crop": train_crop, "world_size": world_size,
               "pretrained": not args.no_pretrained,
               "extra_data": tuple(extra_data_name(path) for path in getattr(args, "extra_data", None) or ()),
               "probe_l2": None, "probe_training_share": None, "probe_extra_data": ()}  # the probe is a later step (training/probe.py)
    return Recipe(**{f.name: derived[f.name] if f.name in derived else getattr(args, f.name)
                     for f in fields(Recipe)})


def extra_data_name(path) -> str:
    """What the recipe records of an --extra-data folder: its name, never the machine's path to it."""
    return Path(str(path).rstrip("/\\")).name or str(path)
