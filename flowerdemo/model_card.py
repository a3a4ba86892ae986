"""The model folder's README.md: a Hugging Face model card written from the artifact's own metadata."""
from __future__ import annotations

from pathlib import Path

from .artifact import MODEL_FILE, ModelMetadata


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _data_sentence(args: dict) -> str:
    fraction = float(args.get("val_fraction_for_training") or 0.0)
    stage = (f"This is a second fine-tuning stage, started from `{args['init_from']}` (a first stage trained on "
             "`train` only). " if args.get("init_from") else "")
    if fraction:
        return (f"{stage}Trained on the 1,020 `train` images plus the first {fraction:.0%} of each class of `val` "
                f"(in file order); model selection, the temperature and the OOD threshold use only the other "
                f"{1 - fraction:.0%} of `val`, never trained on.")
    return f"{stage}Trained on the 1,020 `train` images; model and epoch selected on the 1,020 `val` images."


def render_model_card(metadata: ModelMetadata) -> str:
    metrics = metadata.metrics
    test, val = metrics.get("test") or {}, metrics.get("val") or {}
    calibration, ood = metrics.get("calibration") or {}, metrics.get("ood_test") or {}
    pre = metadata.preprocess
    args = metadata.training_args
    rows = [
        ("test top-1", _percent(test.get("top1"))), ("test top-5", _percent(test.get("top5"))),
        ("test macro-F1", f"{test['macro_f1']:.4f}" if "macro_f1" in test else "n/a"),
        ("val top-1 (model selection)", _percent(val.get("top1"))),
        ("test ECE, 15 bins, raw -> calibrated", f"{_percent(calibration.get('ece_before'))} -> {_percent(calibration.get('ece_after'))}"),
        ("temperature (fitted on val)", f"{metadata.temperature:.3f}"),
    ]
    if ood:
        rows += [
            (f"not-a-flower AUROC (test flowers vs {ood.get('nonflowers')} held-out non-flowers)", f"{ood['auroc']:.4f}"),
            ("FPR at 95 % TPR", _percent(ood.get("fpr_at_95_tpr"))),
            ("non-flowers rejected at the shipped threshold", _percent(ood.get("nonflowers_rejected"))),
            ("test flowers rejected at the shipped threshold", _percent(ood.get("flowers_rejected"))),
        ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    ood_line = _ood_rule_line(metadata)
    return f"""---
license: apache-2.0
library_name: pytorch
pipeline_tag: image-classification
tags:
- image-classification
- torchscript
- flowers
- oxford-flowers-102
- efficientnet-lite
---

# flowerdemo: Oxford Flowers-102 classifier ({metadata.arch})

A TorchScript image classifier for the {metadata.num_classes} species of the Oxford Flowers-102 dataset, with
calibrated probabilities and a "this is not a flower" rule. It powers the flowerdemo Gradio app.

## Intended use
Naming the species of a flower in a photo of the bloom, for curiosity and teaching. Not for identifying
edible, medicinal or toxic plants: a wrong answer there can harm someone. It knows only these {metadata.num_classes}
species (mostly garden flowers common in the UK); anything else is either rejected as "not a flower" or
named as the closest of them.

## Load it (no flowerdemo needed)
```python
import json, torch
extra = {{"flowerdemo.json": ""}}
model = torch.jit.load("{MODEL_FILE}", _extra_files=extra).eval()
meta = json.loads(extra["flowerdemo.json"])  # class_names, preprocess, temperature, ood, metrics...
probs = torch.softmax(model(x) / meta["temperature"], dim=1)  # x: [B,3,{pre.crop},{pre.crop}], preprocessed as below
```
`model.features(x)` gives the last feature map and `model.head(f)` the logits (`forward == head(features)`), for Grad-CAM.{_mirror_sentence(metadata)}

## Preprocessing
Resize the short side to {pre.resize} px ({pre.interpolation}, on the PIL image), center crop {pre.crop} px, scale to
[0, 1], normalise with mean {list(pre.mean)} and std {list(pre.std)}. All of it is in `flowerdemo.json`.

## Training data and recipe
Oxford Flowers-102 (Nilsback & Zisserman, 2008), official split. {_data_sentence(args)} Reported on the 6,149
`test` images, which played no part in training, selection, calibration or thresholds. Fine-tuned from TF
EfficientNet-Lite ImageNet weights: {args.get('epochs', '?')} epochs, SGD (nesterov, lr {args.get('lr', '?')}, head x{args.get('head_lr_scale', '?')}),
cosine schedule, label smoothing {args.get('label_smoothing', '?')}, train crop {args.get('train_crop', '?')} px,
{args.get('augment', '?')} augmentation{_mix_phrase(args)}, {_frozen_phrase(args)} frozen{_ema_phrase(args)}. Full arguments are in
`flowerdemo.json` (`training_args`).{_batchnorm_sentence(metrics)}

## Metrics
| metric | value |
| --- | --- |
{table}

"Not a flower": {ood_line}. Non-flower photos are everyday ImageNet-style pictures; half of them were used
to choose the score, the other half is held out for the numbers above.

![confusion matrix](confusion_matrix.png)
![reliability diagram](reliability_diagram.png)

## Limitations
- 102 species only; a flower outside them is often named as a similar-looking species with high confidence.
- Trained on 10-15 photos per species: unusual angles, close-ups of leaves, drawings or heavy filters are less reliable.
- The "not a flower" rule was calibrated on a few hundred everyday photos; plants that are not among the 102
  species, and flower-like objects (fabric prints, paintings) are the likeliest to get through.
- Probabilities are calibrated on the validation split (temperature scaling); they are not guarantees.
"""


def write_model_card(folder: str | Path, metadata: ModelMetadata) -> None:
    Path(folder, "README.md").write_text(render_model_card(metadata))


def _ood_rule_line(metadata) -> str:
    """The rule as export built it: its targets (metrics.ood_rule) and what it gave on the data it was set on."""
    if metadata.ood is None:
        return "none"
    chosen = metadata.metrics["ood_selection"][metadata.ood.score]
    targets = metadata.metrics["ood_rule"]
    return (f"`{metadata.ood.score}` (k={metadata.ood.k}), threshold {metadata.ood.threshold:.4f}. Of the thresholds "
            f"that accept at least {targets['accept']:.0%} of the held-out validation flowers, it is the one that "
            f"clears both targets ({targets['accept']:.0%} of those flowers accepted, {targets['reject']:.0%} of the "
            f"calibration non-flowers rejected) by the widest equal margin; on those it accepts "
            f"{_percent(chosen['val_flowers_accepted'])} of flowers and rejects "
            f"{_percent(chosen['fit_nonflowers_rejected'])} of non-flowers")


def _mirror_sentence(metadata: ModelMetadata) -> str:
    if metadata.test_time_augmentation != "hflip_mean":
        return ""
    return ("\nThe network looks at each photo and its mirror image and averages the two feature maps (the mirror's "
            "flipped back), so the logits are the mean of both views; nothing to do on your side.")


def _frozen_phrase(args: dict) -> str:
    stages = args.get("freeze_stages", "?")
    if stages == 0:
        return "nothing"
    return "the stem and first stage" if stages == 1 else f"the stem and first {stages} stages"


def _mix_phrase(args: dict) -> str:
    mixup, cutmix = args.get("mixup_alpha", 0.0), args.get("cutmix_alpha", 0.0)
    if not (mixup or cutmix):
        return ""
    kinds = " or ".join(f"{name} (alpha {alpha})" for name, alpha in (("mixup", mixup), ("CutMix", cutmix)) if alpha)
    return f", {kinds} on {args.get('mix_prob', 1.0):.0%} of batches"


def _batchnorm_sentence(metrics: dict) -> str:
    batchnorm = metrics.get("batchnorm") or {}
    if not batchnorm.get("recalibrated"):
        return ""
    return (f"\nAfter training, the BatchNorm statistics of the trained layers were recomputed on the "
            f"{batchnorm['images']:,} training images at the eval transform (training saw smaller, augmented crops); "
            "the weights are as trained.")


def _ema_phrase(args: dict) -> str:
    decay = args.get("model_ema_decay", 0.0)
    return f", an exponential moving average of the weights (decay {decay}) validated and shipped" if decay else ""
