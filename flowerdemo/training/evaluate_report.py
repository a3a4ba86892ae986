"""The evaluator's report, for people: the printed summary (accuracy, calibration, the verdict rule's parts, the
prediction sets, the cost) and the plots (confusion matrix, reliability diagram). The figures themselves are
computed in :mod:`.evaluate`; the field test prints with :func:`.field_report.format_field_report`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.verdict import Verdict
from .answer_report import format_answers


def format_report(report: dict) -> str:
    summary, calibration = report["summary"], report["calibration"]
    lines = [f"{report.get('model', '')} on {report.get('split', '')} ({summary['images']} images)",
             f"  top-1     {summary['top1']:.2%}", f"  top-5     {summary['top5']:.2%}",
             f"  macro-F1  {summary['macro_f1']:.4f}",
             f"  ECE (15 bins) {calibration['ece_before']:.2%} raw -> {calibration['ece_after']:.2%} at T={calibration['temperature']:.3f}"]
    lines += verdict_lines(report)
    lines.append("  " + format_answers(report.get("answers")))
    worst = sorted((row for row in report["per_class"] if row["accuracy"] is not None), key=lambda r: r["accuracy"])[:5]
    lines.append("  weakest classes: " + ", ".join(f"{r['class']} {r['accuracy']:.0%}" for r in worst))
    lines.append("  most confused (true -> predicted, count):")
    lines += [f"    {p['true']} -> {p['predicted']}: {p['count']}" for p in report["most_confused"][:5]]
    return "\n".join(lines)


def verdict_lines(report: dict) -> list[str]:
    """The verdict rule's part of the printed report."""
    lines = []
    if report.get("prediction_sets"):
        sets = report["prediction_sets"]
        lines.append(f"  prediction sets at {sets['level']:.0%}: coverage {sets['coverage']:.2%}, mean size "
                     f"{sets['mean_size']:.3f}, one species {sets['singletons']:.1%}, largest {sets['max_size']}")
    verdicts = report.get("verdicts") or {}
    for group in ("flowers", "nonflowers"):
        if group in verdicts:
            row = verdicts[group]
            lines.append(f"  verdicts on {row['images']} {'test flowers' if group == 'flowers' else 'held-out non-flowers'}: "
                         + ", ".join(f"{v.value} {row[v.value]:.2%}" for v in Verdict))
    if report.get("ood"):
        ood = report["ood"]
        lines.append(f"  not-a-flower parts ({ood['flowers']} flowers vs {ood['nonflowers']} non-flowers):")
        for part in ("knn", "imagenet", "combined"):
            row = ood[part]
            text = f"    {part:9s} AUROC {row['auroc']:.5f}, FPR@95%TPR {row['fpr_at_95_tpr']:.2%}"
            if "threshold" in row:
                text += (f"; at its threshold {row['nonflowers_rejected']:.1%} of non-flowers and "
                         f"{row['flowers_rejected']:.1%} of flowers rejected")
            lines.append(text)
        rule = ood["rule"]
        lines.append(f"    the rule   rejects {rule['nonflowers_rejected']:.1%} of non-flowers, "
                     f"{rule['flowers_rejected']:.1%} of flowers")
    cost = report.get("cost") or {}
    if "imagenet_view_ms_median" in cost:
        lines.append(f"  cost of the ImageNet view (at export): {cost['imagenet_view_ms_median']} ms of "
                     f"{cost['forward_ms_median']} ms per photo, {cost['imagenet_view_megabytes']} MB of model.pt")
    unknown = report.get(Verdict.UNKNOWN_SPECIES.value)
    if unknown:
        left = unknown["left_out"]
        lines.append(f"  species left out of the k-NN bank ({unknown['folds']} folds, {left['images']} photos): "
                     f"{Verdict.UNKNOWN_SPECIES.value} {left[Verdict.UNKNOWN_SPECIES.value]:.1%}, "
                     f"{Verdict.NOT_A_FLOWER.value} {left[Verdict.NOT_A_FLOWER.value]:.1%}, "
                     f"named as a species {left[Verdict.SPECIES.value]:.1%}; known species called unknown "
                     f"{unknown['known_called_unknown']:.1%}")
    return lines


def write_report_files(report: dict, folder: Path, class_names) -> None:
    """confusion_matrix.png and reliability_diagram.png (matplotlib: an evaluation-only dependency)."""
    import matplotlib  # matplotlib: optional (requirements-train.txt), heavy, and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display backend on a server

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
