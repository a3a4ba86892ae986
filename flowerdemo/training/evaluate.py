"""Evaluate a model artifact on a split, with the app's own loading and preprocessing code.

    python -m flowerdemo.training.evaluate --model weights --split test --nonflowers-path NONFLOWERS
    python -m flowerdemo.training.evaluate --model weights --field-data DATA/elsewhere

Prints a table and writes JSON: top-1, top-5, macro-F1, per-class accuracy, the most confused pairs,
calibration (ECE before/after temperature scaling) and, against the held-out non-flower photos, how well
"not a flower" is detected (AUROC, FPR at 95 % TPR, rejection rates at the shipped threshold).

``--field-data`` adds a field test on photos from elsewhere (``field.py``'s labels.csv layout), by default on
their ``test`` part only, shared out with the fractions the model's recipe records, so that the figures are
on photos the model never trained or was calibrated on: the JSON's ``field`` section (``FieldReport``).

The figures are computed here; printing them and the plots are :mod:`.evaluate_report`'s job.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..core.artifact import ModelLoadError
from ..core.decision import Decisions, calibrated_probabilities, decide
from ..core.verdict import Verdict
from ..serve.predict import FlowerClassifier
from .data import DataSource, DatasetLayoutError, add_data_arguments, load_split, nonflower_photos
from .engine import Outputs, scripted_outputs
from .evaluate_report import format_report, write_report_files
from .field import (ANSWERED_KINDS, FIELD_PARTS, LABELS_FILE, FieldSample, FieldSplit, field_part, is_feedback_store,
                    read_feedback_samples, read_field_labels)
from .field_report import FieldReport, PhotoAnswer, field_report, format_field_report, verdict_shares
from .answer_report import answer_figures
from .fitting.conformal import set_figures
from .fitting.gate import fpr_at_tpr
from .metrics import (confusion_matrix, expected_calibration_error, macro_f1, most_confused_pairs,
                      negative_log_likelihood, per_class_accuracy, per_class_f1, reliability_bins, roc_auc,
                      topk_accuracy)
from .steps import run_step


class EvaluationError(ValueError):
    """The model and the data do not belong together; the message says how."""


def check_same_classes(model_names, data_names, data_root: str) -> None:
    if list(model_names) == list(data_names):
        return
    if len(model_names) != len(data_names):
        raise EvaluationError(f"the model knows {len(model_names)} classes but {data_root} names {len(data_names)}")
    renamed = [f"{old!r} (model) vs {new!r} (data)" for old, new in zip(model_names, data_names) if old != new]
    raise EvaluationError(f"the model and {data_root} name {len(renamed)} classes differently: {', '.join(renamed[:5])}; "
                          "re-export the model with the dataset's names (python -m flowerdemo.training.export --from-model "
                          "MODEL --rename-classes ...) or evaluate on the data it was exported with")


def load_classifier(model):
    """``model`` as given (a loaded FlowerClassifier) or loaded from a path / hub source, the app's own way."""
    return model if isinstance(model, FlowerClassifier) else FlowerClassifier.load(model)


def decided(classifier, outputs: Outputs) -> Decisions:
    """Everything the model says about ``outputs``, decided as the app decides it (core.decision)."""
    return decide(classifier.metadata, outputs.logits, outputs.embeddings, outputs.imagenet_logits,
                  outputs.sharpness, classifier.ood_bank)


def evaluate_split(model, data: DataSource, split: str, nonflower_paths=None, workers: int = 2,
                   limit_per_class: int | None = None) -> dict:
    classifier = load_classifier(model)
    meta = classifier.metadata
    samples, class_names = load_split(data, split, limit_per_class)
    check_same_classes(meta.class_names, class_names, data.root)
    flowers = scripted_outputs(classifier.module, meta.preprocess, samples, workers, split)
    report = classification_report(flowers.logits, flowers.labels, class_names, meta.temperature)
    report["model"], report["split"] = classifier.source, split
    if isinstance(meta.metrics.get("cost"), dict):
        report["cost"] = meta.metrics["cost"]  # measured by the exporter; benchmarks/bench_model.py re-measures
    said = decided(classifier, flowers)
    if meta.prediction_sets is not None:
        report["prediction_sets"] = set_figures(said.sets, flowers.labels, meta.prediction_sets.level)
    accepted = [(int(label),) for label in flowers.labels]
    report["answers"] = answer_figures(accepted, said.answers, said.sets, said.groups, group_names(meta))
    if meta.gate is not None:
        gate, bank = meta.gate, classifier.ood_bank
        flower_scores, flower_verdicts = said.scores, said.verdicts
        report["verdicts"] = {"flowers": verdict_shares(flower_verdicts)}
        report[Verdict.UNKNOWN_SPECIES.value] = leave_classes_out(gate, flowers, bank, classifier.ood_bank_labels, flower_verdicts,
                                                      temperature=meta.temperature)
        if nonflower_paths:
            others = scripted_outputs(classifier.module, meta.preprocess, nonflower_paths, workers, "non-flowers")
            other_said = decided(classifier, others)
            other_scores = other_said.scores
            report["verdicts"]["nonflowers"] = verdict_shares(other_said.verdicts)
            report["ood"] = rule_parts_report(gate, flower_scores, other_scores)
            accepted = ~gate.rejected(other_scores)
            report["ood"]["nonflowers_accepted_files"] = [Path(str(p)).name for p, keep in zip(nonflower_paths, accepted)
                                                          if keep]
    return report


# ------------------------------------------------------------------------------------------------ field test


def field_split_of(metadata) -> tuple[FieldSplit, str]:
    """How the model's recipe shared photos from elsewhere into train / calibration / test, and where that came
    from: ``recipe`` when its training_args record the fractions, else ``defaults`` (FieldSplit's own)."""
    args = metadata.training_args if isinstance(metadata.training_args, dict) else {}
    train, calibration = args.get("field_train_fraction"), args.get("field_calibration_fraction")
    if train is None and calibration is None:
        return FieldSplit(), "defaults"
    defaults = FieldSplit()
    try:
        split = FieldSplit(train=defaults.train if train is None else train,
                           calibration=defaults.calibration if calibration is None else calibration)
    except ValueError as error:
        raise EvaluationError(f"the model's recipe records a field split that cannot be used ({error}); "
                              "re-export it with valid field_train_fraction / field_calibration_fraction") from None
    return split, "recipe"


def check_accept_names(samples: list[FieldSample], class_names) -> None:
    """Every known / loose photo needs at least one right answer the model can give."""
    known = set(class_names)
    unanswerable = sorted({s.class_name for s in samples if s.kind in ANSWERED_KINDS
                           and not any(name in known for name in s.accept)})
    if unanswerable:
        raise EvaluationError(f"the labels file's accept names for {', '.join(map(repr, unanswerable[:5]))} are none "
                              f"of the model's {len(known)} class names; fix the labels file's accept column (the "
                              "model's spelling) or evaluate a model that knows those species")


def photo_answers(classifier, outputs: Outputs, depth: int = 5) -> list[PhotoAnswer]:
    """Each photo's ranked classes, prediction set and verdict, from the same outputs and rule the app uses."""
    said = decided(classifier, outputs)
    ranked = np.argsort(-said.probabilities, axis=1, kind="stable")[:, :depth]
    return [PhotoAnswer(tuple(int(i) for i in row), None if in_set is None else tuple(int(i) for i in in_set), verdict,
                        answer, int(group))
            for row, in_set, verdict, answer, group in zip(ranked, said.sets, said.verdicts, said.answers, said.groups)]


def evaluate_field(model, folder: str, labels_file: str | None = None, part: str = "test",
                   workers: int = 2) -> FieldReport:
    """The field test: the figures of ``field_report`` on the ``part`` of the photos under ``folder``."""
    classifier = load_classifier(model)
    meta = classifier.metadata
    split, split_from = field_split_of(meta)
    # the app's feedback store is photos from elsewhere too: "where people said it was wrong"
    from_feedback = labels_file is None and is_feedback_store(folder)
    every = read_feedback_samples(folder) if from_feedback else read_field_labels(folder, labels_file)
    if not every:
        raise EvaluationError(f"the feedback store {folder} holds no saved photos yet")
    samples = field_part(every, split, part)
    if not samples:
        raise EvaluationError(f"none of the {len(every)} photos under {folder} falls in the {part!r} part "
                              f"(train {split.train:.0%}, calibration {split.calibration:.0%}, the rest test); "
                              f"choose another --field-part ({', '.join(FIELD_PARTS + ('all',))})")
    check_accept_names(samples, meta.class_names)
    outputs = scripted_outputs(classifier.module, meta.preprocess, [s.path for s in samples], workers, "field")
    # Folder and file name only: the report travels into metrics.json and the model card, machine paths must not.
    labels_path = Path(labels_file) if labels_file else Path(folder) / LABELS_FILE
    labels = (f"{Path(folder).resolve().name}/ (feedback store)" if from_feedback
              else f"{labels_path.resolve().parent.name}/{labels_path.name}")
    level = meta.prediction_sets.level if meta.prediction_sets is not None else None
    return field_report(samples, photo_answers(classifier, outputs), meta.class_names, labels=labels, part=part,
                        split_train=split.train, split_calibration=split.calibration, split_from=split_from,
                        set_level=level, group_names=group_names(meta))


def group_names(metadata) -> tuple:
    return metadata.photo_groups.names if metadata.photo_groups is not None else ()



def rule_parts_report(gate, flowers, others) -> dict:
    """Each part of the rule (k-NN, ImageNet view, combined) and the rule as applied, on flowers vs non-flowers."""
    def part(flower_scores, other_scores, threshold=None) -> dict:
        row = {"auroc": roc_auc(other_scores, flower_scores), "fpr_at_95_tpr": fpr_at_tpr(flower_scores, other_scores, 0.95)}
        if threshold is not None:
            row |= {"threshold": threshold, "flowers_rejected": float((flower_scores > threshold).mean()),
                    "nonflowers_rejected": float((other_scores > threshold).mean())}
        return row

    applied_flowers, applied_others = gate.rejected(flowers), gate.rejected(others)
    return {
        "nonflowers": int(len(others.knn)), "flowers": int(len(flowers.knn)),
        "knn": part(flowers.knn, others.knn, gate.knn_reject_threshold),
        "imagenet": part(flowers.imagenet, others.imagenet),
        "combined": part(flowers.combined, others.combined, gate.reject_threshold),
        "rule": {"flowers_rejected": float(applied_flowers.mean()), "nonflowers_rejected": float(applied_others.mean()),
                 "plant_like_nonflowers_kept": int((others.plant_like & ~applied_others & (others.combined > gate.reject_threshold)).sum())},
    }


def leave_classes_out(gate, flowers: Outputs, bank, bank_labels, known_verdicts, folds: int = 5,
                      temperature: float = 1.0) -> dict | None:
    """How often photos of a species missing from the k-NN bank are called :attr:`Verdict.UNKNOWN_SPECIES`.

    Classes are dealt into ``folds`` groups by index; each group in turn is removed from the bank, and its photos
    play flowers of unknown species. The network itself still trained on them (only the bank forgets them),
    so this measures the threshold's mechanics, not a truly new species; see the README. ``known_verdicts`` are
    the same photos' verdicts with the whole bank (the cost of the threshold on known species).
    """
    classes = np.unique(flowers.labels)
    if bank is None or bank_labels is None or len(classes) < 2:
        return None
    bank_labels = np.asarray(bank_labels)
    verdicts = []
    for fold in range(folds):
        left_out = classes[fold::folds]
        photos = np.isin(flowers.labels, left_out)
        kept = ~np.isin(bank_labels, left_out)
        if not photos.any() or not kept.any():
            continue
        verdicts += gate.verdicts(gate.scores(flowers.imagenet_logits[photos], flowers.embeddings[photos], bank[kept],
                                              calibrated_probabilities(flowers.logits[photos], temperature), flowers.sharpness[photos]))
    return {"folds": folds, "left_out": verdict_shares(verdicts),
            "known_called_unknown": list(known_verdicts).count(Verdict.UNKNOWN_SPECIES) / len(known_verdicts)}


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names, temperature: float = 1.0) -> dict:
    num_classes = len(class_names)
    matrix = confusion_matrix(logits.argmax(1), labels, num_classes)
    accuracy, f1 = per_class_accuracy(matrix), per_class_f1(matrix)
    raw, calibrated = calibrated_probabilities(logits, 1.0), calibrated_probabilities(logits, temperature)
    counts, confidence, bin_accuracy = reliability_bins(calibrated, labels)
    raw_counts, raw_confidence, raw_accuracy = reliability_bins(raw, labels)
    return {
        "summary": {"images": int(len(labels)), "top1": topk_accuracy(logits, labels, 1),
                    "top5": topk_accuracy(logits, labels, 5), "macro_f1": macro_f1(matrix)},
        "calibration": {
            "temperature": temperature,
            "ece_before": expected_calibration_error(raw, labels), "ece_after": expected_calibration_error(calibrated, labels),
            "nll_before": negative_log_likelihood(logits, labels), "nll_after": negative_log_likelihood(logits, labels, temperature),
            "bins_after": {"count": counts.tolist(), "confidence": confidence.tolist(), "accuracy": bin_accuracy.tolist()},
            "bins_before": {"count": raw_counts.tolist(), "confidence": raw_confidence.tolist(), "accuracy": raw_accuracy.tolist()},
        },
        "per_class": [{"class": name, "accuracy": None if np.isnan(acc) else float(acc), "f1": float(score),
                       "support": int(matrix[i].sum())} for i, (name, acc, score) in enumerate(zip(class_names, accuracy, f1))],
        "most_confused": [{"true": class_names[t], "predicted": class_names[p], "count": c}
                          for t, p, c in most_confused_pairs(matrix, 10)],
        "confusion_matrix": matrix.tolist(),
    }


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a flowerdemo model", add_help=add_help, prog=prog)
    parser.add_argument("--model", default=None, help="model.pt, model folder, hf://owner/repo@rev (default: FLOWERDEMO_MODEL or weights/)")
    parser.add_argument("--split", default=None,
                        help="e.g. val or test (Flowers-102), any ImageFolder split, or none (default: test, or none "
                             "when --field-data is given: add --split test for both)")
    add_data_arguments(parser)
    parser.add_argument("--nonflowers-path", default=None,
                        help="the folder of everyday non-flower photos given to the exporter (required unless "
                             "--nonflowers-subset none)")
    parser.add_argument("--nonflowers-subset", default="holdout", choices=["holdout", "all", "none"],
                        help="holdout = the odd-numbered photos the exporter never used to fit the 'not a flower' rule")
    parser.add_argument("--field-data", default=None, metavar="DIR",
                        help="also test on photos from elsewhere: DIR/labels.csv (filename,source,kind,class_name,"
                             "accept) and DIR/images/ (see flowerdemo/training/field.py), or the app's feedback "
                             "store (FLOWERDEMO_FEEDBACK_DIR: the corrections people saved; --field-part all "
                             "scores a model on every one)")
    parser.add_argument("--field-labels", default=None, metavar="CSV", help="the labels file (default: DIR/labels.csv)")
    parser.add_argument("--field-part", default="test", choices=FIELD_PARTS + ("all",),
                        help="which part of the field photos to report on, shared out by file name with the "
                             "fractions the model's recipe records (default: %(default)s, never trained or "
                             "calibrated on)")
    parser.add_argument("--output-json", default=None,
                        help="where to write the full report (default: <split>_report.json, field_report.json "
                             "without a split)")
    parser.add_argument("--plots-dir", default=None, help="also write confusion_matrix.png and reliability_diagram.png here")
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def nonflowers_for_report(path: str | None, subset: str) -> list[str]:
    """The non-flower photos to report on: none, all of them, or the odd-numbered half the exporter held out."""
    if subset == "none":
        return []
    fit, holdout = nonflower_photos(path)
    return holdout if subset == "holdout" else sorted(fit + holdout)


def chosen_split(args) -> str | None:
    """The Flowers-102 / ImageFolder split to report on, or None: a field test alone skips it unless asked."""
    split = args.split if args.split is not None else (None if args.field_data else "test")
    return None if split == "none" else split


def main(args) -> dict:
    split = chosen_split(args)
    if split is None and not args.field_data:
        raise EvaluationError("--split none leaves nothing to evaluate; give a split or --field-data DIR")
    # The data's errors before the model's loading, so a mistyped folder is reported at once.
    nonflowers = nonflowers_for_report(args.nonflowers_path, args.nonflowers_subset) if split else []
    data = DataSource.from_args(args) if split else None
    classifier = load_classifier(args.model)  # once, for both parts
    report = {"model": classifier.source}
    if split is not None:
        report = evaluate_split(classifier, data, split, nonflowers, args.workers, args.limit_per_class)
        print(format_report(report))
    if args.field_data:
        field = evaluate_field(classifier, args.field_data, args.field_labels, args.field_part, args.workers)
        report["field"] = field.to_dict()
        print(format_field_report(field))
    output = Path(args.output_json or (f"{split}_report.json" if split else "field_report.json"))
    output.write_text(json.dumps(report, indent=1))
    print(f"full report: {output}")
    if args.plots_dir and split is not None:
        write_report_files(report, Path(args.plots_dir), [row["class"] for row in report["per_class"]])
    return report


# What a user can fix from the command line: one line on stderr, never a traceback.
USER_ERRORS = (EvaluationError, DatasetLayoutError, ModelLoadError)


def cli(argv=None, prog: str | None = None) -> int:
    return run_step("evaluate", get_args_parser(prog=prog), main, USER_ERRORS, argv)


if __name__ == "__main__":
    sys.exit(cli())
