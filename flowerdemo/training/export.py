"""Turn trained weights into a self-describing model folder (a Hugging Face model repo, as is).

    python -m flowerdemo.training.export --checkpoint runs/lite0/model_best.pth --nonflowers-path NONFLOWERS --output weights
    python -m flowerdemo.training.export --from-model weights --nonflowers-path NONFLOWERS --output weights-v2   # upgrade

The steps, in order (this module only runs them; each lives where its name says): load the weights (a trainer
checkpoint or an earlier artifact's own network: :mod:`.sources`); recompute the trained layers' BatchNorm
statistics on the training images at the eval transform (checkpoints only); add the frozen ImageNet network as the
"what else could it be" view and script the whole (:mod:`.scripting`); collect outputs on the k-NN bank (training
images), val (never trained on), the calibration share of the photos from elsewhere and the calibration
non-flowers; fit the temperature, the conformal prediction sets and the verdict rule on them
(:mod:`.fitting.calibrate`); measure the cost (:mod:`.cost`); assemble the metadata and save; verify by loading
with the app's own loader and evaluating the test split and the held-out non-flowers (:mod:`.evaluate`); write
``metrics.json``, plots and the model card (:mod:`.model_card`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from .. import __version__
from ..core.artifact import MODEL_FILE, ModelLoadError, ModelMetadata, load_artifact
from ..core.conformal import SET_METHODS, ConformalSets
from ..core.preprocess import PreprocessConfig
from ..core.taxonomy import Taxonomy, TaxonomyError
from ..core.verdict import Verdict
from ..core.gate import FlowerGate, normalize
from .checkpoints import CheckpointError
from .cost import measure_cost
from .data import (DataSource, DatasetLayoutError, Sample, add_data_arguments, eval_loader, nonflower_photos,
                   training_and_selection_samples)
from .engine import Outputs, recalibrate_batchnorm, scripted_outputs
from .errors import ExportError
from .evaluate import evaluate_field, evaluate_split
from .evaluate_report import write_report_files
from .field import LABELS_FILE, capped_per_class, extra_training_samples, field_calibration_rows
from .field_report import format_field_report
from .fitting.calibrate import fit_on_pool
from .fitting.pool import CalibrationPool
from .fitting.ranks import RuleTargets, fit_conditional_rules
from .fitting.verdict_rule import GateTargets
from .model_card import write_model_card
from .models import (ArchitectureError, PretrainedWeightsError, create_imagenet_model, frozen_stem_and_stages,
                     imagenet_class_info)
from .recipe import Recipe, RecipeError
from .scripting import check_contract, round_to_storage_precision, save_model, script_model
from .sources import Source, source_from_checkpoint, source_from_model
from .steps import run_step

BANK_EXTRA_PER_CLASS = 40  # photos from elsewhere per species in the k-NN bank (model.pt <= 32 MB)


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export trained weights as a self-describing model folder",
                                     add_help=add_help, prog=prog)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default="runs/lite0/model_best.pth", help="a trainer checkpoint")
    source.add_argument("--from-model", default=None,
                        help="re-export the network of an earlier model (folder, model.pt or hf://...): the upgrade "
                             "path for models from an older flowerdemo; its BatchNorm statistics are kept")
    parser.add_argument("--output", default="weights", help="model folder to write (uploadable to the Hub as is)")
    add_data_arguments(parser)
    parser.add_argument("--nonflowers-path", required=True,
                        help="a folder of everyday photos that are not flowers (a few hundred: pets, food, streets, "
                             "rooms, leaves...); in file-name order, the even-numbered ones fit the 'not a flower' "
                             "rule and the odd-numbered ones are held out to report on it")
    parser.add_argument("--pretrained-file", default="",
                        help="a local ImageNet weights file for the architecture (its 'not a flower' view), loaded "
                             "through timm's pretrained loading; default: the Hugging Face cache or Hub")
    parser.add_argument("--rename-classes", action="store_true",
                        help="give the model the dataset's class names when they differ from the weights' own but "
                             "count the same (e.g. torchvision's 'lotus' for 'lotus lotus'; label order must agree)")
    parser.add_argument("--extra-data", nargs="+", default=[], metavar="FOLDER",
                        help="the photos from elsewhere the model trained with (train --extra-data): their training "
                             "share joins the k-NN bank, their calibration share (by the recipe's field split) is "
                             "calibrated on beside the val photos, and their test share is reported on")
    parser.add_argument("--unknown-species-accept", type=float, default=GateTargets.unknown_species_accept,
                        help="with --extra-data: share of known calibration flowers the 'unknown species' rule keeps")
    parser.add_argument("--knn-k", type=int, default=GateTargets.knn_k)
    parser.add_argument("--accept", type=float, default=GateTargets.accept,
                        help="the 'not a flower' threshold accepts at least this share of val flowers, always")
    parser.add_argument("--reject", type=float, default=GateTargets.reject,
                        help="target share of calibration non-flowers to reject; the threshold clears both targets "
                             "by the widest margin")
    parser.add_argument("--unknown-accept", type=float, default=GateTargets.unknown_accept,
                        help="share of val flowers of known species within the 'unknown species' k-NN distance")
    parser.add_argument("--set-level", type=float, default=0.95, help="prediction sets hold the true species this often")
    parser.add_argument("--set-method", choices=SET_METHODS, default="lac",
                        help="the sets' score: lac (every species above a probability: the smallest sets) or raps "
                             "(cumulative mass, what older models used)")
    parser.add_argument("--set-penalty", type=float, default=None,
                        help="with --set-method raps: penalty per rank beyond --set-k-reg (0: APS); default: chosen "
                             "on val (the smallest sets whose worst coverage over random val halves stays a point "
                             "above the level)")
    parser.add_argument("--set-k-reg", type=int, default=1)
    parser.add_argument("--rank-accuracy", type=float, nargs=3, default=RuleTargets.accuracy,
                        metavar=("SPECIES", "GENUS", "FAMILY"),
                        help="answers at each rank are right this often on the calibration photos (default: "
                             "%(default)s); fitted per photo group")
    parser.add_argument("--rank-local-accuracy", type=float, nargs=3, default=RuleTargets.local_accuracy,
                        metavar=("SPECIES", "GENUS", "FAMILY"),
                        help="... and the least sure answers each rank gives (at its threshold) are right this often "
                             "(default: %(default)s)")
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=None,
                        help="the network averages each photo with its mirror image (about twice the compute); "
                             "default: on, or as the --from-model model did")
    parser.add_argument("--recalibrate-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="recompute the BatchNorm statistics of the layers that trained on the training images "
                             "at the eval transform (training saw smaller, augmented crops); checkpoints only")
    parser.add_argument("--test-split", default="test", help="reported split ('' to skip)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="smoke tests only")
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main(args) -> dict:
    started = time.time()
    output = Path(args.output)
    source = load_source(args)
    mirror_average = args.mirror_average if args.mirror_average is not None else source.mirror_average is not False
    nonflower_fit, nonflower_holdout = nonflower_photos(args.nonflowers_path)
    data = DataSource.from_args(args)
    class_names, train_samples, val_samples = export_samples(args, source, data)
    batchnorm = source.batchnorm
    # a probe's checkpoint keeps the body (and BatchNorm statistics) of a model that was recalibrated already
    if args.recalibrate_bn and not args.from_model and not batchnorm.get("recalibrated"):
        batchnorm = {"recalibrated": True, "images": recalibrate_on_training_images(
            source.backbone, train_samples, source.preprocess, source.recipe.freeze_stages, args.workers)}

    imagenet = round_to_storage_precision(create_imagenet_model(source.recipe.arch, source.preprocess,
                                                                args.pretrained_file))
    imagenet_names, plant_like = imagenet_class_info()
    plain = script_model(source.backbone, imagenet, mirror_average=mirror_average)
    check_contract(plain, source.preprocess.crop)
    train_out = scripted_outputs(plain, source.preprocess, train_samples, args.workers, "train bank", imagenet=False)
    val_out = scripted_outputs(plain, source.preprocess, val_samples, args.workers, "val")
    fit_out = scripted_outputs(plain, source.preprocess, nonflower_fit, args.workers, "non-flowers (fit)")
    pool = calibration_pool(plain, source.preprocess, val_out, list(args.extra_data), source.recipe, class_names,
                            args.workers)

    bank = normalize(torch.from_numpy(train_out.embeddings))
    targets = GateTargets(args.accept, args.reject, unknown_accept=args.unknown_accept, knn_k=args.knn_k,
                          unknown_species_accept=args.unknown_species_accept)
    temperature, sets, gate, fit_reports = fit_on_pool(pool, fit_out, bank, plant_like, targets, args.set_level,
                                                       args.set_penalty, args.set_k_reg, args.set_method)
    taxonomy = bundled_taxonomy(class_names)
    groups, ranks = None, None
    if taxonomy is not None:
        # the unknown-species caps per group are the verdict rule's own targets: group 0 (like the training
        # photos) keeps --unknown-accept of its known flowers, the shifted groups --unknown-species-accept
        caps = (1.0 - args.unknown_accept,) + (1.0 - args.unknown_species_accept,) * (RuleTargets.groups - 1)
        targets = RuleTargets(accuracy=tuple(args.rank_accuracy), local_accuracy=tuple(args.rank_local_accuracy),
                              known_called_unknown=caps)
        groups, ranks, sets, gate, fit_reports["conditional_rules_fit"] = fit_conditional_rules(
            pool, bank, temperature, gate, sets, taxonomy, targets)
    print_fit_summary(temperature, sets, fit_reports)

    scripted = script_model(source.backbone, imagenet, bank, torch.from_numpy(train_out.labels), mirror_average)
    metadata = assemble_metadata(source, class_names, temperature, gate, imagenet_names, sets, mirror_average,
                                 (taxonomy, groups, ranks), {
        "val": {"top1": float((val_out.logits.argmax(1) == val_out.labels).mean()), "epoch": source.epoch,
                "images": len(val_out)},
        **fit_reports, "batchnorm": batchnorm,
        "cost": measure_cost(scripted, source.preprocess.crop)})
    output.mkdir(parents=True, exist_ok=True)
    model_path = output / MODEL_FILE
    save_model(scripted, metadata, model_path)
    verify_saved(model_path, metadata)

    if args.test_split:
        metadata = report_on_held_out_photos(args, scripted, metadata, model_path, data, nonflower_holdout)
    write_model_card(output, metadata)
    (output / "metrics.json").write_text(json.dumps(metadata.metrics, indent=2))
    print(f"wrote {output} in {time.time() - started:.0f}s")
    return metadata.metrics


def load_source(args) -> Source:
    if args.from_model:
        return source_from_model(args.from_model)
    if not Path(args.checkpoint).is_file():
        raise ExportError(f"checkpoint not found: {args.checkpoint} (train one with python -m flowerdemo.training.train, "
                          "or re-export a model with --from-model)")
    return source_from_checkpoint(args.checkpoint)


def export_samples(args, source: Source, data: DataSource) -> tuple[list, list, list]:
    """(class names, k-NN bank / BatchNorm samples, val samples). The k-NN bank holds what the network trained on;
    calibration uses only val images it never trained on."""
    recipe = source.recipe
    train_samples, val_samples, data_class_names = training_and_selection_samples(
        data, recipe.train_split, recipe.val_split, recipe.val_fraction_for_training, args.limit_per_class)
    class_names = resolve_class_names(source.class_names, data_class_names, args.data_path, args.rename_classes)
    if args.extra_data:
        extra = extra_training_samples(list(args.extra_data), class_names, recipe.field_split)
        train_samples = bank_samples(train_samples, extra)
    return class_names, train_samples, val_samples


def bank_samples(training: list, extra: list) -> list:
    """What the network trained on, with a few of each species' extra photos: the k-NN bank (the hundreds of
    web dandelions would add megabytes to model.pt and nothing to a k-th-neighbour distance) and the BatchNorm
    statistics (which then see both collections, as training did)."""
    return training + capped_per_class(extra, BANK_EXTRA_PER_CLASS)


def resolve_class_names(weights: list, data: list, data_path: str, rename: bool) -> list:
    """The names the model will carry: the weights' own, or the dataset's under ``--rename-classes``."""
    if list(weights) == list(data):
        return list(data)
    renamed = [f"{old!r} -> {new!r}" for old, new in zip(weights, data) if old != new]
    if len(weights) != len(data):
        raise ExportError(f"the weights know {len(weights)} classes but {data_path} names {len(data)}; export with "
                          "the data the model was trained on")
    if not rename:
        raise ExportError(f"{data_path} names {len(renamed)} of the {len(data)} classes differently "
                          f"({', '.join(renamed[:5])}); pass --rename-classes to take the dataset's names (the label "
                          "order must be the same), or export with the data the model was trained on")
    print(f"renaming {len(renamed)} classes to the dataset's names: {', '.join(renamed)}")
    return list(data)


def recalibrate_on_training_images(backbone: torch.nn.Module, samples, preprocess: PreprocessConfig,
                                   frozen_stages: int, workers: int) -> int:
    """Give the unfrozen BatchNorm layers the statistics of the training images as the app will see them
    (the eval transform), before anything is calibrated or measured. Returns the number of images used."""
    return recalibrate_batchnorm(backbone, eval_loader(samples, preprocess, workers, batch_size=64),
                                 keep=frozen_stem_and_stages(backbone, frozen_stages))


def calibration_pool(module, preprocess: PreprocessConfig, val_out: Outputs, folders, recipe: Recipe, class_names,
                     workers: int) -> CalibrationPool:
    """The val photos' outputs and, with ``folders``, those of the field's calibration photos."""
    if not folders:
        return CalibrationPool(val_out)
    rows = field_calibration_rows(folders, recipe.field_split)
    if not rows:
        raise ExportError(f"--extra-data {' '.join(map(str, folders))} has no photos in its calibration share")
    index = {name: i for i, name in enumerate(class_names)}
    outputs = scripted_outputs(module, preprocess, [Sample(row.path, -1) for row in rows], workers,
                               "elsewhere (calibration)")
    return CalibrationPool(val_out, outputs, tuple(row.kind for row in rows), tuple(row.labels(index) for row in rows))


def print_fit_summary(temperature: float, sets: ConformalSets, fit_reports: dict) -> None:
    gate_report = fit_reports["gate_fit"]
    print(f"temperature {temperature:.3f}; prediction sets at {sets.level:.0%}: qhat {sets.qhat:.4f}; verdict rule: "
          f"L2 {gate_report['l2']}, out-of-fold AUROC {gate_report['oof_auroc']['combined']:.4f} "
          f"(k-NN alone {gate_report['oof_auroc']['knn']:.4f}); calibration pool {fit_reports['calibration_pool']}")


def assemble_metadata(source: Source, class_names, temperature: float, gate: FlowerGate, imagenet_names,
                      sets: ConformalSets, mirror_average: bool, rank_parts: tuple, metrics: dict) -> ModelMetadata:
    taxonomy, groups, ranks = rank_parts
    return ModelMetadata(
        taxonomy=taxonomy, photo_groups=groups, ranks=ranks,
        class_names=tuple(class_names), preprocess=source.preprocess, arch=source.recipe.arch,
        temperature=temperature, gate=gate, imagenet_class_names=tuple(imagenet_names), prediction_sets=sets,
        training_args=source.recipe.to_dict(), flowerdemo_version=__version__, metrics=metrics,
        test_time_augmentation="hflip_mean" if mirror_average else "none",
    )


def bundled_taxonomy(class_names) -> Taxonomy | None:
    """The curated table (flowerdemo/assets/taxonomy.csv) when it lists every class, else None: a model of other
    classes answers at species rank only."""
    try:
        return Taxonomy.from_csv(class_names=class_names)
    except TaxonomyError as error:
        print(f"no taxonomy for these classes ({error}): the model will answer at species rank only")
        return None


def verify_saved(path: Path, metadata: ModelMetadata) -> None:
    """The file loads through the app's own loader and says what was meant to be said."""
    _, loaded = load_artifact(path)
    if loaded.to_dict() != ModelMetadata.from_dict(json.loads(metadata.to_json())).to_dict():
        raise ExportError(f"{path} does not round-trip its metadata")


def report_on_held_out_photos(args, scripted, metadata: ModelMetadata, model_path: Path, data: DataSource,
                              nonflower_holdout) -> ModelMetadata:
    """Evaluate the saved model (the app's own loading) on the test split, the held-out non-flowers and the test
    share of the photos from elsewhere; save it again with those figures, and write the plots beside it."""
    report = evaluate_split(str(model_path), data, args.test_split, nonflower_holdout,
                            args.workers, args.limit_per_class)
    metadata = replace(metadata, metrics=dict(metadata.metrics, **metrics_from_report(report)))
    field_folders = [folder for folder in args.extra_data if (Path(folder) / LABELS_FILE).is_file()]
    for number, folder in enumerate(field_folders):  # photos from elsewhere never trained or calibrated on
        field = evaluate_field(str(model_path), folder, part="test", workers=args.workers)
        print(format_field_report(field))
        # "field": the first folder (what older model cards read); "field_reports": every folder, by name
        if number == 0:
            metadata.metrics["field"] = field.to_dict()
        metadata.metrics.setdefault("field_reports", {})[Path(folder).resolve().name] = field.to_dict()
    metadata.metrics["cost"]["model_megabytes"] = round(model_path.stat().st_size / 1e6, 1)
    save_model(scripted, metadata, model_path)
    write_report_files(report, model_path.parent, metadata.class_names)
    return metadata


def metrics_from_report(report: dict) -> dict:
    """The evaluator's findings the artifact carries (the UI, the model card and metrics.json read these)."""
    keys = ("verdicts", "ood", Verdict.UNKNOWN_SPECIES.value, "prediction_sets", "answers")
    return {"test": report["summary"], "calibration": report["calibration"],
            **{key: report[key] for key in keys if key in report}}


# What a user can fix from the command line: one line on stderr, never a traceback.
USER_ERRORS = (ExportError, ModelLoadError, DatasetLayoutError, RecipeError, ArchitectureError, PretrainedWeightsError,
               CheckpointError)


def cli(argv=None, prog: str | None = None) -> int:
    return run_step("export", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
