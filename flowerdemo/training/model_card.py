"""The model folder's README.md: a Hugging Face model card written from the artifact's own metadata."""
from __future__ import annotations

from pathlib import Path

from ..core.artifact import MODEL_FILE, ModelMetadata
from ..core.ranks import RANKS
from ..core.verdict import Verdict

# metrics.json keys spelled as the verdicts they count (the evaluator's report and FieldReport.to_dict())
SPECIES, UNKNOWN_SPECIES, NOT_A_FLOWER = Verdict.SPECIES.value, Verdict.UNKNOWN_SPECIES.value, Verdict.NOT_A_FLOWER.value


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _data_sentence(args: dict) -> str:
    fraction = float(args.get("val_fraction_for_training") or 0.0)
    if fraction:
        return (f"Trained on the 1,020 `train` images plus the first {fraction:.0%} of each class of `val` "
                f"(in file order); model selection, the temperature and the OOD threshold use only the other "
                f"{1 - fraction:.0%} of `val`, never trained on.")
    return "Trained on the 1,020 `train` images; model and epoch selected on the 1,020 `val` images."


def _probe_sentence(args: dict) -> str:
    """The linear probe (training/probe.py), when the recipe records one."""
    if args.get("probe_l2") is None:
        return ""
    share = args.get("probe_training_share")
    return (f"Then the classifier head alone was refitted on the frozen network's embeddings (a linear probe, "
            f"L-BFGS, L2 pull {args['probe_l2']:g} toward the trained head) with the training share of "
            f"{', '.join(args.get('probe_extra_data') or ()) or 'the photos from elsewhere'}"
            + (f", the training collection carrying {share:.0%} of the loss" if share else "") + ". ")


def render_model_card(metadata: ModelMetadata) -> str:
    metrics = metadata.metrics
    test, val = metrics.get("test") or {}, metrics.get("val") or {}
    calibration = metrics.get("calibration") or {}
    pre = metadata.preprocess
    args = metadata.training_args
    rows = [
        ("test top-1", _percent(test.get("top1"))), ("test top-5", _percent(test.get("top5"))),
        ("test macro-F1", f"{test['macro_f1']:.4f}" if "macro_f1" in test else "n/a"),
        ("val top-1 (model selection)", _percent(val.get("top1"))),
        ("test ECE, 15 bins, raw -> calibrated", f"{_percent(calibration.get('ece_before'))} -> {_percent(calibration.get('ece_after'))}"),
        ("temperature (fitted on val)", f"{metadata.temperature:.3f}"),
    ]
    rows += _verdict_rows(metrics)
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    gate_text = _gate_section(metadata)
    return f"""---
license: apache-2.0
library_name: pytorch
pipeline_tag: image-classification
tags:
- image-classification
- torchscript
- flowers
- oxford-flowers-102
- timm
- {metadata.arch.split(".")[0].replace("_", "-")}
---

# flowerdemo: Oxford Flowers-102 classifier ({metadata.arch})

A TorchScript image classifier for the {metadata.num_classes} species of the Oxford Flowers-102 dataset, with
calibrated probabilities, "one of these" prediction sets, and three answers: a known species, a flower of a
species it does not know, or not a flower (and what it looks like instead). It powers the flowerdemo Gradio app.

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
model.imagenet.float()  # the frozen ImageNet view is stored in half precision
meta = json.loads(extra["flowerdemo.json"])  # class_names, preprocess, temperature, gate, prediction_sets, metrics...
probs = torch.softmax(model(x) / meta["temperature"], dim=1)  # x: [B,3,{pre.crop},{pre.crop}], preprocessed as below
imagenet_logits = model.imagenet_logits(x)  # [B, 1000]; names in meta["imagenet_class_names"]
```
`model.features(x)` gives the last feature map and `model.head(f)` the logits (`forward == head(features)`), for
Grad-CAM; `model.ood_bank` holds the L2-normalised pooled features of the training images (k-NN), and
`model.ood_bank_labels` their classes.{_mirror_sentence(metadata)}

## Preprocessing
Resize the short side to {pre.resize} px ({pre.interpolation}, on the PIL image), center crop {pre.crop} px, scale to
[0, 1], normalise with mean {list(pre.mean)} and std {list(pre.std)}. All of it is in `flowerdemo.json`.

## Training data and recipe
Oxford Flowers-102 (Nilsback & Zisserman, 2008), official split. {_data_sentence(args)} Reported on the 6,149
`test` images, which played no part in training, selection, calibration or thresholds. Fine-tuned from
`{metadata.arch}`'s ImageNet weights: {args.get('epochs', '?')} epochs, SGD (nesterov, lr {args.get('lr', '?')}, head x{args.get('head_lr_scale', '?')}),
cosine schedule, label smoothing {args.get('label_smoothing', '?')}, train crop {args.get('train_crop', '?')} px,
{args.get('augment', '?')} augmentation{_mix_phrase(args)}, {_frozen_phrase(args)} frozen{_ema_phrase(args)}{_balance_phrase(args)}.
{_probe_sentence(args)}The full recipe is in `flowerdemo.json` (`training_args`).{_batchnorm_sentence(metrics)}

## Metrics
| metric | value |
| --- | --- |
{table}
{_field_section(metrics.get("field"))}
{_answers_section(metadata)}
{gate_text}

![confusion matrix](confusion_matrix.png)
![reliability diagram](reliability_diagram.png)

## Limitations
- {metadata.num_classes} species only. A flower of another species is called "a flower I don't know" only when it is far
  from every training photo; one that resembles a known species is named as that species.
- Trained on 10-15 photos per species: unusual angles, close-ups of leaves, drawings or heavy filters are less reliable.
- The "not a flower" rule was fitted on a few hundred everyday photos; plants that are not among the known
  species, and flower-like objects (fabric prints, paintings) are the likeliest to get through.
- "Unknown species" was measured by leaving species out of the k-NN bank, not on real unseen species: the network
  itself trained on those species, so a truly new one may sit closer to a known species than that test suggests.
- Probabilities are calibrated on the validation split (temperature scaling); they are not guarantees.
"""


def write_model_card(folder: str | Path, metadata: ModelMetadata) -> None:
    Path(folder, "README.md").write_text(render_model_card(metadata))


def _verdict_rows(metrics: dict) -> list:
    """Metric rows for each part of the verdict rule, the prediction sets and the cost (what export measured)."""
    rows, ood = [], metrics.get("ood") or {}
    if ood:
        count = f"test flowers vs {ood.get('nonflowers')} held-out non-flowers"
        for key, name in (("knn", "k-NN distance"), ("imagenet", "ImageNet view"), ("combined", "combined")):
            part = ood.get(key) or {}
            if "auroc" in part:
                rows.append((f"not a flower, {name}: AUROC ({count})", f"{part['auroc']:.4f}"))
        rule = ood.get("rule") or {}
        rows += [("held-out non-flowers called not_a_flower", _percent(rule.get("nonflowers_rejected"))),
                 ("test flowers called not_a_flower", _percent(rule.get("flowers_rejected")))]
    flowers = (metrics.get("verdicts") or {}).get("flowers") or {}
    if flowers:
        rows.append(("test flowers called species / unknown_species",
                     f"{_percent(flowers.get(SPECIES))} / {_percent(flowers.get(UNKNOWN_SPECIES))}"))
    unknown = metrics.get(UNKNOWN_SPECIES) or {}
    if unknown:
        rows.append(("photos of species left out of the k-NN bank called unknown_species",
                     _percent(unknown["left_out"][UNKNOWN_SPECIES])))
    sets = metrics.get("prediction_sets") or {}
    if sets:
        rows.append((f"prediction sets at {sets['level']:.0%}: test coverage, mean size",
                     f"{_percent(sets['coverage'])}, {sets['mean_size']:.3f}"))
    cost = metrics.get("cost") or {}
    if cost.get("imagenet_view_ms_median") is not None:
        rows.append(("cost of the ImageNet view (1 image, CPU median; export machine)",
                     f"{cost['imagenet_view_ms_median']} ms of {cost['forward_ms_median']} ms, "
                     f"{cost['imagenet_view_megabytes']} MB (half precision)"))
    return rows


VERDICT_WORDS = {SPECIES: "named", UNKNOWN_SPECIES: "\"don't know\"", NOT_A_FLOWER: "\"not a flower\""}


def _verdict_header(names) -> str:
    return " / ".join(VERDICT_WORDS.get(name, name.replace("_", " ")) for name in names)


def _mix(mix: dict | None, names) -> str:
    return "n/a" if not mix else " / ".join(_percent(mix.get(name)) for name in names)


def _field_section(field: dict | None) -> str:
    """"Photos from elsewhere": the evaluator's field test (FieldReport.to_dict()), per source and overall."""
    if not field:
        return ""
    groups = dict(field.get("sources") or {}) | {"all sources": field.get("all") or {}}
    mixes = [group.get(key) for group in groups.values() for key in ("verdicts", UNKNOWN_SPECIES) if group.get(key)]
    # Verdict names as the report recorded them (more may be added to the rule later), in their first order.
    names = list(dict.fromkeys(name for mix in mixes for name in mix if name != "images"))
    split = field.get("split") or {}
    level = f" at {field['set_level']:.0%}" if field.get("set_level") is not None else ""
    rows = []
    for name, group in groups.items():
        size = group.get("mean_set_size")
        sets = "n/a" if group.get("coverage") is None else f"{_percent(group['coverage'])} ({size:.2f})"
        unknown = group.get(UNKNOWN_SPECIES) or {}
        rows.append(f"| {name} | {group.get('answered', 0)} | {_percent(group.get('top1'))} | "
                    f"{_percent(group.get('top5'))} | {sets} | {_mix(group.get('verdicts'), names)} | "
                    f"{unknown.get('images', 0)} | {_mix(unknown, names)} |")
    return f"""
## Photos from elsewhere
Photos from collections other than Flowers-102 (`{field.get('labels', '?')}`), part `{field.get('part', '?')}`:
{field.get('images', '?')} photos, shared out by a hash of the file name (train {split.get('train', 0):.0%}, calibration
{split.get('calibration', 0):.0%}, the rest test; fractions from the {split.get('from', '?')}). A prediction is right when it is
any of the photo's accepted names (a genus-level label such as "daisy" accepts each of its species).

| source | photos of known species | top-1 | top-5 | sets{level} cover (mean size) | verdicts: {_verdict_header(names)} | photos of unknown species | their verdicts: {_verdict_header(names)} |
| --- | --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + "\n"


def _gate_section(metadata: ModelMetadata) -> str:
    """How the three answers and the prediction sets are decided, as export built them."""
    gate, sets = metadata.gate, metadata.prediction_sets
    if gate is None:
        return "No \"not a flower\" rule: every photo gets the closest of the known classes."
    fit = metadata.metrics.get("gate_fit") or {}
    targets = fit.get("targets") or {}
    text = f"""## Three answers: species, unknown species, not a flower
- **Not a flower**: a logistic regression (L2 {fit.get('l2', '?')}) on the log-probabilities of the frozen ImageNet
  network (the network the fine-tune started from, {gate.imagenet_classes} classes, stored in half precision) and on the
  cosine distance to the k-th nearest training image in the fine-tuned feature space (k-NN, k = {gate.knn_k}). It was fitted on
  {fit.get('val_flowers', '?')} validation flowers never trained on against {fit.get('nonflowers', '?')} everyday non-flower
  photos (the even-numbered half of the calibration folder); the odd-numbered half is held out for the numbers
  above. Threshold {gate.reject_threshold:.3f} on the log-odds: of the thresholds that accept at least
  {targets.get('accept', 0):.0%} of the validation flowers (out-of-fold scores), the one that clears that target and
  "reject {targets.get('reject', 0):.0%} of the calibration non-flowers" by the widest equal margin.
- Photos the ImageNet view files under a plant-like class ({len(gate.plant_like)} classes: daisy, pot, vase, bee,
  butterflies, fungi...) are rejected only if the k-NN distance alone also exceeds {gate.knn_reject_threshold:.3f}.
- A rejected photo's answer names what the ImageNet view sees ("it looks like a beagle"); the
  {gate.imagenet_classes} names travel in `flowerdemo.json` (`imagenet_class_names`).
- **Unknown species**: an accepted photo whose unknown-species score (w_knn x k-NN distance + w_top x -log top
  probability + b, weights {', '.join(f'{w:.3g}' for w in gate.unknown_weights)}, fitted against photos of species the
  model does not know) exceeds {_unknown_thresholds(gate, metadata)}."""
    if sets is not None:
        text += f"""
- **One of these**: split conformal prediction sets ({_set_score(sets)}), fitted on the calibrated
  probabilities of {sets.calibration_images} calibration photos never trained on{" with a threshold per photo group" if sets.qhat_by_group else ""};
  they hold the true species with probability at least {sets.level:.0%} for photos like those."""
    return text


def _set_score(sets) -> str:
    if sets.method == "lac":
        return "LAC: every species whose probability clears the threshold, the smallest sets at the level"
    return f"RAPS, penalty {sets.penalty} beyond rank {sets.k_reg}, not randomised"


def _unknown_thresholds(gate, metadata: ModelMetadata) -> str:
    if gate.unknown_threshold_by_group and metadata.photo_groups is not None:
        return "its photo group's threshold (" + ", ".join(
            f"{name}: {value:.3f}" for name, value in zip(metadata.photo_groups.names, gate.unknown_threshold_by_group)) + ")"
    return f"{gate.unknown_threshold:.3f}"


def _answers_section(metadata: ModelMetadata) -> str:
    """The rank rule (answer at the deepest rank sure enough), the photo groups, and how the answers did."""
    if metadata.ranks is None or metadata.taxonomy is None:
        return ""
    metrics, ranks, groups, sets = metadata.metrics, metadata.ranks, metadata.photo_groups, metadata.prediction_sets
    names = groups.names if groups is not None else ("all photos",)
    rule_rows = "\n".join(
        f"| {name} | " + " | ".join("never" if t > 1 else f"{t:.3f}" for t in row)
        + (f" | {sets.qhat_by_group[i]:.4f}" if sets is not None and sets.qhat_by_group else " | n/a") + " |"
        for i, (name, row) in enumerate(zip(names, ranks.thresholds)))
    collections = [("Flowers-102 test", metrics.get("answers"), None)]
    for folder, report in (metrics.get("field_reports") or {}).items():
        for source, group in (report.get("sources") or {}).items():
            collections.append((f"{folder}: {source}", group.get("answers"), group.get("unknown_named_as_species")))
    answer_rows = "\n".join(_answer_row(name, figures, named) for name, figures, named in collections if figures or named is not None)
    return f"""
## Answers at the rank it is sure of
The calibrated probabilities are summed up the taxonomy (species -> genus -> family; {len(metadata.taxonomy.genera)} genera,
{len(metadata.taxonomy.families)} families, names and sources in `flowerdemo.json`'s `taxonomy`). The app names the species
when its probability clears the photo group's species threshold, else the genus, else the family, else says it is not
sure. The thresholds were fitted on {ranks.calibration_images} calibration photos never trained on so that answers at each
rank were right at least {', '.join(f'{a:.0%}' for a in ranks.accuracy)} of the time (species, genus, family; a one-sided
Wilson bound). Photo groups come from a "shift" score (a logistic regression on the photo's embedding, k-NN distance and
sharpness that tells Flowers-102's held-out photos from photos taken elsewhere); each group has its own thresholds,
prediction-set threshold (Mondrian conformal) and unknown-species threshold.

| photo group | species | genus | family | sets' qhat |
| --- | --- | --- | --- | --- |
{rule_rows}

On photos never trained or calibrated on (an answer is wrong when its taxon holds none of the photo's right
species; "not sure" is never wrong; unknown species: photos of species outside the model, held-out species only):

| photos | species (right) | genus (right) | family (right) | not sure | wrong | unknown species named as a species |
| --- | --- | --- | --- | --- | --- | --- |
{answer_rows}

Classes, as the app names them:

| class (dataset) | common name (*scientific name*) | family |
| --- | --- | --- |
""" + "\n".join(f"| {t.class_name} | {t.display()} | {t.family} |" for t in metadata.taxonomy.taxa) + "\n"


def _answer_row(name: str, figures: dict | None, named: float | None) -> str:
    if not figures:
        return f"| {name} | | | | | | {_percent(named)} |"
    cells = [f"{_percent(figures[rank.value])} ({_percent(figures.get(rank.value + '_right'))})" for rank in RANKS]
    return (f"| {name} ({figures['images']}) | {' | '.join(cells)} | {_percent(figures['none'])} | "
            f"{_percent(figures['wrong'])} | {_percent(named)} |")


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


def _balance_phrase(args: dict) -> str:
    balance = args.get("class_balance", "none")
    return {"sampler": ", classes drawn equally often", "loss": ", a class-balanced loss"}.get(balance, "")


def _ema_phrase(args: dict) -> str:
    decay = args.get("model_ema_decay", 0.0)
    return f", an exponential moving average of the weights (decay {decay}) validated and shipped" if decay else ""


def headline_rows(metadata: ModelMetadata) -> list[tuple[str, str]]:
    """The few figures the README's "Model" table carries, from the model's own metrics (tests/test_readme.py
    checks that the README shows exactly these)."""
    metrics = metadata.metrics
    test, sets, answers = metrics.get("test") or {}, metrics.get("prediction_sets") or {}, metrics.get("answers") or {}
    nonflowers = ((metrics.get("verdicts") or {}).get("nonflowers") or {}).get(Verdict.NOT_A_FLOWER.value)
    rows = [("Flowers-102 test: top-1 / top-5", f"{_percent(test.get('top1'))} / {_percent(test.get('top5'))}")]
    if answers:
        rows.append(("Flowers-102 test: answered at species rank / wrong answers",
                     f"{_percent(answers.get('species'))} / {_percent(answers.get('wrong'))}"))
    if sets:
        rows.append((f"Flowers-102 test: sets at {sets.get('level', 0):.0%} cover / mean size",
                     f"{_percent(sets.get('coverage'))} / {sets.get('mean_size', 0):.2f}"))
    rows.append(("held-out non-flowers called \"not a flower\"", _percent(nonflowers)))
    for folder, report in sorted((metrics.get("field_reports") or {}).items()):
        overall = report.get("all") or {}
        figures = overall.get("answers") or {}
        if figures:
            rows.append((f"{folder} test share: top-1 / species rank / wrong answers",
                         f"{_percent(overall.get('top1'))} / {_percent(figures.get('species'))} / "
                         f"{_percent(figures.get('wrong'))}"))
        if overall.get("unknown_named_as_species") is not None:
            rows.append((f"{folder} held-out unknown species named as a species",
                         _percent(overall["unknown_named_as_species"])))
    cost = metrics.get("cost") or {}
    if cost.get("model_megabytes") is not None:
        rows.append(("`model.pt` size", f"{cost['model_megabytes']} MB"))
    return rows


def headline_table(metadata: ModelMetadata) -> str:
    return "| measured | value |\n| --- | --- |\n" + "\n".join(f"| {name} | {value} |" for name, value in headline_rows(metadata))
