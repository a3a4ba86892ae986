"""Evaluate a model artifact on a split, with the app's own loading and preprocessing code.

    python -m flowerdemo.evaluate --model weights --split test

Prints a table and writes JSON: top-1, top-5, macro-F1, per-class accuracy, the most confused pairs,
calibration (ECE before/after temperature scaling) and, against the held-out non-flower photos, how well
"not a flower" is detected (AUROC, FPR at 95 % TPR, rejection rates at the shipped threshold).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from . import engine
from .data import DEFAULT_DATA_PATH, DEFAULT_NONFLOWER_PATH, Sample, eval_loader, list_images, load_split
from .metrics import (confusion_matrix, expected_calibration_error, macro_f1, most_confused_pairs,
                      negative_log_likelihood, per_class_accuracy, per_class_f1, reliability_bins, roc_auc,
                      softmax, topk_accuracy)
from .ood import fpr_at_tpr, ood_scores_np
from .preprocess import PreprocessConfig


def collect_outputs(module, preprocess: PreprocessConfig, samples, workers: int = 2, desc: str = "eval"):
    """(logits [N, K], pooled embeddings [N, C], labels [N]) of an artifact for samples (``Sample``s or plain
    paths, label -1), preprocessed exactly as the app does."""
    samples = [s if isinstance(s, Sample) else Sample(str(s), -1) for s in samples]
    return engine.collect_outputs(module.features, module.head, eval_loader(samples, preprocess, workers), desc=desc)


def evaluate_split(model: str, data_path: str, split: str, nonflower_paths=None, workers: int = 2,
                   limit_per_class: int | None = None) -> dict:
    from .predict import FlowerClassifier

    classifier = FlowerClassifier.load(model)
    meta = classifier.metadata
    samples, class_names = load_split(data_path, split, limit_per_class)
    if list(class_names) != list(meta.class_names):
        raise ValueError(f"the model's {meta.num_classes} classes are not the dataset's {len(class_names)} classes")
    logits, embeddings, labels = collect_outputs(classifier.module, meta.preprocess, samples, workers, split)
    report = classification_report(logits, labels, class_names, meta.temperature)
    report["model"], report["split"] = classifier.source, split
    if meta.ood is not None and nonflower_paths:
        other_logits, other_embeddings, _ = collect_outputs(classifier.module, meta.preprocess, nonflower_paths,
                                                            workers, "non-flowers")
        score, bank = meta.ood.score, classifier.ood_bank
        flowers = ood_scores_np(score, logits, embeddings, meta.temperature, bank, meta.ood.k)
        others = ood_scores_np(score, other_logits, other_embeddings, meta.temperature, bank, meta.ood.k)
        report["ood"] = {
            "score": meta.ood.score, "threshold": meta.ood.threshold, "nonflowers": len(others),
            "auroc": roc_auc(others, flowers), "fpr_at_95_tpr": fpr_at_tpr(flowers, others, 0.95),
            "flowers_rejected": float((flowers > meta.ood.threshold).mean()),
            "nonflowers_rejected": float((others > meta.ood.threshold).mean()),
        }
    return report


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names, temperature: float = 1.0) -> dict:
    num_classes = len(class_names)
    matrix = confusion_matrix(logits.argmax(1), labels, num_classes)
    accuracy, f1 = per_class_accuracy(matrix), per_class_f1(matrix)
    raw, calibrated = softmax(logits), softmax(logits, temperature)
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


def format_report(report: dict) -> str:
    summary, calibration = report["summary"], report["calibration"]
    lines = [f"{report.get('model', '')} on {report.get('split', '')} ({summary['images']} images)",
             f"  top-1     {summary['top1']:.2%}", f"  top-5     {summary['top5']:.2%}",
             f"  macro-F1  {summary['macro_f1']:.4f}",
             f"  ECE (15 bins) {calibration['ece_before']:.2%} raw -> {calibration['ece_after']:.2%} at T={calibration['temperature']:.3f}"]
    if report.get("ood"):
        ood = report["ood"]
        lines += [f"  not-a-flower ({ood['score']}, {ood['nonflowers']} non-flower photos): AUROC {ood['auroc']:.4f}, "
                  f"FPR@95%TPR {ood['fpr_at_95_tpr']:.2%}",
                  f"    at the shipped threshold: {ood['nonflowers_rejected']:.1%} of non-flowers rejected, "
                  f"{ood['flowers_rejected']:.1%} of flowers rejected"]
    worst = sorted((row for row in report["per_class"] if row["accuracy"] is not None), key=lambda r: r["accuracy"])[:5]
    lines.append("  weakest classes: " + ", ".join(f"{r['class']} {r['accuracy']:.0%}" for r in worst))
    lines.append("  most confused (true -> predicted, count):")
    lines += [f"    {p['true']} -> {p['predicted']}: {p['count']}" for p in report["most_confused"][:5]]
    return "\n".join(lines)


def write_report_files(report: dict, folder: Path, class_names) -> None:
    """confusion_matrix.png and reliability_diagram.png (matplotlib: an evaluation-only dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)  # after a long evaluation, a missing folder must not lose the plots
    matrix = np.asarray(report["confusion_matrix"], dtype=np.float64)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(9, 8), dpi=110)
    image = axis.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    axis.set_xlabel("predicted class index")
    axis.set_ylabel("true class index")
    axis.set_title(f"Confusion matrix ({report.get('split', '')}, rows normalised), top-1 {report['summary']['top1']:.2%}")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(folder / "confusion_matrix.png")
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(5.5, 5), dpi=110)
    calibration = report["calibration"]
    centers = (np.arange(15) + 0.5) / 15
    for key, label, color in (("bins_before", "raw", "#bbbbbb"), ("bins_after", f"T={calibration['temperature']:.2f}", "#2a7ab9")):
        bins = calibration[key]
        mask = np.asarray(bins["count"]) > 0
        axis.bar(centers[mask], np.asarray(bins["accuracy"])[mask], width=1 / 15, alpha=0.6, label=label,
                 color=color, edgecolor="black", linewidth=0.4)
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Reliability ({report.get('split', '')}): ECE {calibration['ece_before']:.2%} -> {calibration['ece_after']:.2%}")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(folder / "reliability_diagram.png")
    plt.close(figure)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a flowerdemo model", add_help=add_help)
    parser.add_argument("--model", default=None, help="model.pt, model folder, hf://owner/repo@rev (default: FLOWERDEMO_MODEL or weights/)")
    parser.add_argument("--split", default="test", help="e.g. val or test (Flowers-102), or any ImageFolder split")
    parser.add_argument("--data-path", default=str(DEFAULT_DATA_PATH))
    parser.add_argument("--nonflowers-path", default=str(DEFAULT_NONFLOWER_PATH))
    parser.add_argument("--nonflowers-subset", default="holdout", choices=["holdout", "all", "none"],
                        help="holdout = the odd-numbered photos the exporter never used to choose the OOD score")
    parser.add_argument("--output-json", default=None, help="where to write the full report (default: <split>_report.json)")
    parser.add_argument("--plots-dir", default=None, help="also write confusion_matrix.png and reliability_diagram.png here")
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main(args) -> dict:
    nonflowers = [] if args.nonflowers_subset == "none" else list_images(args.nonflowers_path)
    if args.nonflowers_subset == "holdout":
        nonflowers = nonflowers[1::2]
    report = evaluate_split(args.model, args.data_path, args.split, nonflowers, args.workers, args.limit_per_class)
    print(format_report(report))
    output = Path(args.output_json or f"{args.split}_report.json")
    output.write_text(json.dumps(report, indent=1))
    print(f"full report: {output}")
    if args.plots_dir:
        write_report_files(report, Path(args.plots_dir), [row["class"] for row in report["per_class"]])
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
