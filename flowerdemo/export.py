"""Turn a training checkpoint into a self-describing model folder (a Hugging Face model repo, as is).

    python -m flowerdemo.export --checkpoint runs/lite0/model_best.pth --output weights

Steps: recompute the trained layers' BatchNorm statistics on the training images at the eval transform;
script the network with ``features``/``head`` methods; fit the temperature on val; build the
out-of-distribution rule (score chosen by AUROC on val flowers vs half of the non-flower photos; the
threshold accepts at least 95 % of val flowers and clears that target and "reject 90 % of those
non-flowers" by the widest equal margin); evaluate on the test split with the app's own loading code;
write ``model.pt``, ``metrics.json``, plots and the model card.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .artifact import MODEL_FILE, ModelMetadata, OODRule, quiet_torchscript, save_artifact
from .calibration import fit_temperature
from .data import DEFAULT_DATA_PATH, DEFAULT_NONFLOWER_PATH, list_images, training_and_selection_samples
from .ood import OOD_SCORES, normalize, ood_scores_np, threshold_with_widest_margin
from .metrics import roc_auc
from .preprocess import PreprocessConfig

BANK_DTYPE = torch.float16  # halves the bank's share of model.pt; cosine similarity does not need more


class FlowerNet(nn.Module):
    """What gets scripted: ``forward == head(features(x))``, plus the k-NN feature bank as a buffer."""

    __constants__ = ["mirror_average"]  # a scripted constant: the unused branch compiles away

    def __init__(self, backbone: nn.Module, ood_bank: torch.Tensor | None = None, mirror_average: bool = False):
        super().__init__()
        self.backbone = backbone
        self.mirror_average = mirror_average
        width = backbone.num_features
        self.register_buffer("ood_bank", ood_bank.to(BANK_DTYPE) if ood_bank is not None else torch.zeros(0, width, dtype=BANK_DTYPE))

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


def script_model(backbone: nn.Module, ood_bank: torch.Tensor | None = None,
                 mirror_average: bool = False) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.script(FlowerNet(backbone.eval(), ood_bank, mirror_average).eval())


def load_checkpoint_backbone(path: str | Path):
    """(backbone, class_names, training_args, preprocess, raw checkpoint) from a trainer checkpoint."""
    from .models import create_model

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own trainer's file
    args = checkpoint["args"]
    class_names = list(checkpoint["class_names"])
    preprocess = PreprocessConfig.from_dict(checkpoint["preprocess"])
    backbone = create_model(args["arch"], len(class_names), pretrained=False, preprocess=preprocess)
    backbone.load_state_dict(checkpoint["model"])
    return backbone.eval(), class_names, args, preprocess, checkpoint


def recalibrate_on_training_images(backbone: nn.Module, samples, preprocess: PreprocessConfig, frozen_stages: int,
                                   workers: int) -> int:
    """Give the unfrozen BatchNorm layers the statistics of the training images as the app will see them
    (the eval transform), before anything is calibrated or measured. Returns the number of images used."""
    from .data import eval_loader
    from .engine import recalibrate_batchnorm
    from .models import frozen_stem_and_stages

    return recalibrate_batchnorm(backbone, eval_loader(samples, preprocess, workers, batch_size=64),
                                 keep=frozen_stem_and_stages(backbone, frozen_stages))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint as a self-describing model folder", add_help=add_help)
    parser.add_argument("--checkpoint", default="runs/lite0/model_best.pth")
    parser.add_argument("--output", default="weights", help="model folder to write (uploadable to the Hub as is)")
    parser.add_argument("--data-path", default=str(DEFAULT_DATA_PATH))
    parser.add_argument("--nonflowers-path", default=str(DEFAULT_NONFLOWER_PATH),
                        help="non-flower photos; even-numbered ones choose the OOD score, odd ones are held out")
    parser.add_argument("--ood-score", default="auto", choices=["auto", *OOD_SCORES])
    parser.add_argument("--knn-k", type=int, default=5)
    parser.add_argument("--accept", type=float, default=0.95,
                        help="the threshold accepts at least this fraction of val flowers, always")
    parser.add_argument("--reject", type=float, default=0.90,
                        help="target fraction of fit non-flowers to reject; the threshold clears both targets by the widest margin")
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=True,
                        help="the network averages each photo with its mirror image (about twice the compute)")
    parser.add_argument("--recalibrate-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="recompute the BatchNorm statistics of the layers that trained on the training images "
                             "at the eval transform (training saw smaller, augmented crops)")
    parser.add_argument("--test-split", default="test", help="reported split ('' to skip)")
    parser.add_argument("--limit-per-class", type=int, default=None, help="smoke tests only")
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main(args) -> dict:
    from .evaluate import collect_outputs, evaluate_split, write_report_files

    started = time.time()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    backbone, class_names, training_args, preprocess, checkpoint = load_checkpoint_backbone(args.checkpoint)

    # The k-NN bank holds what the network trained on; calibration uses only val images it never trained on.
    train_samples, val_samples, _ = training_and_selection_samples(
        args.data_path, training_args.get("train_split", "train"), training_args.get("val_split", "val"),
        training_args.get("val_fraction_for_training", 0.0), args.limit_per_class)
    batchnorm = {"recalibrated": False}
    if args.recalibrate_bn:
        batchnorm = {"recalibrated": True, "images": recalibrate_on_training_images(
            backbone, train_samples, preprocess, training_args.get("freeze_stages", 0), args.workers)}
    plain = script_model(backbone, mirror_average=args.mirror_average)
    nonflowers = list_images(args.nonflowers_path)
    nonflower_fit, nonflower_holdout = nonflowers[0::2], nonflowers[1::2]

    _, train_embeddings, _ = collect_outputs(plain, preprocess, train_samples, args.workers, "train bank")
    val_logits, val_embeddings, val_labels = collect_outputs(plain, preprocess, val_samples, args.workers, "val")
    fit_logits, fit_embeddings, _ = collect_outputs(plain, preprocess, nonflower_fit, args.workers, "non-flowers (fit)")

    temperature = fit_temperature(val_logits, val_labels)
    bank = normalize(torch.from_numpy(train_embeddings))
    selection = {}
    for score in OOD_SCORES:
        flowers = ood_scores_np(score, val_logits, val_embeddings, temperature, bank, args.knn_k)
        others = ood_scores_np(score, fit_logits, fit_embeddings, temperature, bank, args.knn_k)
        threshold = threshold_with_widest_margin(flowers, others, args.accept, args.reject)
        selection[score] = {"val_auroc": roc_auc(others, flowers), "threshold": threshold,
                            "val_flowers_accepted": float((flowers <= threshold).mean()),
                            "fit_nonflowers_rejected": float((others > threshold).mean())}
    chosen = max(selection, key=lambda s: selection[s]["val_auroc"]) if args.ood_score == "auto" else args.ood_score
    rule = OODRule(chosen, selection[chosen]["threshold"], args.knn_k if chosen == "knn_cosine" else 0)
    print(f"temperature {temperature:.3f}; OOD score candidates (val flowers vs fit non-flowers):")
    for score, row in selection.items():
        print(f"  {score:11s} AUROC {row['val_auroc']:.4f}  accepts {row['val_flowers_accepted']:.1%} of val flowers, "
              f"rejects {row['fit_nonflowers_rejected']:.1%} of fit non-flowers")
    print(f"chosen: {chosen}, threshold {rule.threshold:.4f}")

    scripted = script_model(backbone, bank if chosen == "knn_cosine" else None, args.mirror_average)
    metadata = ModelMetadata(
        class_names=tuple(class_names), preprocess=preprocess, arch=training_args["arch"], temperature=temperature,
        ood=rule, training_args=training_args, flowerdemo_version=__version__,
        metrics={"val": {"top1": float((val_logits.argmax(1) == val_labels).mean()), "epoch": checkpoint.get("epoch", -1) + 1},
                 "ood_selection": selection, "ood_rule": {"rule": "widest_margin", "accept": args.accept, "reject": args.reject},
                 "batchnorm": batchnorm},
        test_time_augmentation="hflip_mean" if args.mirror_average else "none",
    )
    model_path = output / MODEL_FILE
    save_artifact(scripted, metadata, model_path)

    if args.test_split:
        report = evaluate_split(str(model_path), args.data_path, args.test_split, nonflower_holdout,
                                args.workers, args.limit_per_class)
        metrics = dict(metadata.metrics, test=report["summary"], ood_test=report.get("ood"),
                       calibration=report["calibration"])
        metadata = ModelMetadata(**{**metadata.__dict__, "metrics": metrics})
        save_artifact(scripted, metadata, model_path)
        write_report_files(report, output, class_names)
    from .model_card import write_model_card

    write_model_card(output, metadata)
    (output / "metrics.json").write_text(json.dumps(metadata.metrics, indent=2))
    print(f"wrote {output} in {time.time() - started:.0f}s")
    return metadata.metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
