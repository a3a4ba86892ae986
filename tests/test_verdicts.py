"""The verdict rule (FlowerGate), its fitting, conformal prediction sets, and the artifact format that carries them."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from flowerdemo.core.artifact import ModelLoadError, ModelMetadata, load_artifact
from flowerdemo.core.conformal import ConformalConfigError, ConformalSets
from flowerdemo.training.fitting.conformal import coverage_and_size, fit_conformal, select_penalty, true_class_scores
from flowerdemo.training.engine import Outputs
from flowerdemo.training.fitting.verdict_rule import GateTargets, fit_gate
from flowerdemo.core.gate import FlowerGate, GateConfigError, PLANT_LIKE_WNIDS, plant_like_indices
from flowerdemo.training.fitting.gate import fit_logistic, out_of_fold_scores
from flowerdemo.training.metrics import roc_auc

from conftest import TINY_IMAGENET, tiny_gate

# ------------------------------------------------------------------------------------------------ the gate

# Bank: flowers live in the first 4 of 8 dimensions.
BANK = torch.nn.functional.normalize(torch.cat([torch.randn(30, 4, generator=torch.Generator().manual_seed(0)),
                                                torch.zeros(30, 4)], dim=1), dim=1)
NEAR = BANK[:1] * 2.0  # an embedding on top of a bank row: k-NN distance ~0
FAR = torch.eye(8)[6:7]  # orthogonal to every bank row: k-NN distance 1


def imagenet_logits(top: int, classes: int = len(TINY_IMAGENET)) -> np.ndarray:
    logits = np.zeros((1, classes))
    logits[0, top] = 10.0
    return logits


def test_gate_direction_and_the_three_verdicts():
    gate = tiny_gate(imagenet_weights=(0.0,) * 5, knn_weight=10.0, bias=-5.0, reject_threshold=0.0,
                     knn_reject_threshold=0.5, unknown_threshold=0.3, plant_like=())
    near = gate.scores(imagenet_logits(2), NEAR.numpy(), BANK)
    far = gate.scores(imagenet_logits(2), FAR.numpy(), BANK)
    assert far.knn[0] > near.knn[0] and far.combined[0] > near.combined[0]  # higher = less flower-like
    assert gate.verdicts(near) == ["species"] and gate.verdicts(far) == ["not_a_flower"]
    # Between the unknown distance and the rejection: a flower of a species it does not know.
    middle = replace(gate, reject_threshold=100.0)
    assert middle.verdicts(far) == ["unknown_species"]


def test_imagenet_view_rejects_a_dog_near_the_flowers_but_never_a_plant_like_photo_alone():
    # ImageNet log-probabilities: seeing a beagle makes log p(toaster) very negative; weight the "toaster"
    # column negatively so a confident beagle scores high. Both photos sit on top of the bank (k-NN says flower).
    weights = [0.0] * 5
    weights[2] = -1.0
    gate = tiny_gate(imagenet_weights=tuple(weights), knn_weight=0.0, bias=0.0, reject_threshold=5.0,
                     knn_reject_threshold=0.5, unknown_threshold=0.9, plant_like=(1, 3))
    dog = gate.scores(imagenet_logits(0), NEAR.numpy(), BANK)
    daisy = gate.scores(imagenet_logits(1), NEAR.numpy(), BANK)
    assert dog.combined[0] == pytest.approx(daisy.combined[0])  # the ImageNet part alone says the same of both...
    assert gate.verdicts(dog) == ["not_a_flower"]
    assert daisy.plant_like[0] and gate.verdicts(daisy) == ["species"]  # ...but a daisy is plant-like
    # A plant-like photo far from every known flower is still rejected: the k-NN view agrees.
    far_daisy = gate.scores(imagenet_logits(1), FAR.numpy(), BANK)
    assert gate.verdicts(far_daisy) == ["not_a_flower"]


def test_a_photo_too_small_to_judge_is_too_small_not_rejected_on_the_ordinary_evidence():
    # far from the bank: the ordinary rule rejects it (combined 5 > 0), the stricter one for small photos does not
    gate = tiny_gate(imagenet_weights=(0.0,) * 5, knn_weight=10.0, bias=-5.0, reject_threshold=0.0,
                     knn_reject_threshold=0.5, unknown_threshold=0.3, plant_like=(), low_quality_sharpness=0.04,
                     low_quality_reject_threshold=8.0)
    far, near = FAR.numpy(), NEAR.numpy()
    assert gate.verdicts(gate.scores(imagenet_logits(2), far, BANK, input_sharpness=[0.2])) == ["not_a_flower"]
    assert gate.verdicts(gate.scores(imagenet_logits(2), far, BANK, input_sharpness=[0.01])) == ["too_small"]
    # strong enough evidence still says "not a flower", however small the photo
    strict = replace(gate, low_quality_reject_threshold=3.0)
    assert strict.verdicts(strict.scores(imagenet_logits(2), far, BANK, input_sharpness=[0.01])) == ["not_a_flower"]
    # a small photo the model does know stays a species; without a sharpness measure the rule never applies
    assert gate.verdicts(gate.scores(imagenet_logits(2), near, BANK, input_sharpness=[0.01])) == ["species"]
    assert gate.verdicts(gate.scores(imagenet_logits(2), far, BANK)) == ["not_a_flower"]


def test_downscaled_photo_has_too_little_detail_and_the_original_enough():
    from PIL import Image

    from flowerdemo.core.gate import sharpness
    from flowerdemo.core.preprocess import PreprocessConfig, eval_transform, load_image
    from conftest import ROOT

    transform = eval_transform(PreprocessConfig())
    photo = load_image(ROOT / "examples" / "sunflower.jpg")
    small = photo.resize((64, round(64 * photo.height / photo.width)), Image.BILINEAR)
    sharp_original, sharp_small = sharpness(torch.stack([transform(photo), transform(small)]))
    assert sharp_original > 0.06  # Flowers-102's 1st percentile is about 0.06
    assert sharp_small < 0.03 and sharp_small < sharp_original / 3


def test_unknown_species_rule_weighs_the_distance_and_the_top_class_surprise():
    gate = tiny_gate(imagenet_weights=(0.0,) * 5, knn_weight=0.0, bias=-5.0, reject_threshold=0.0,
                     knn_reject_threshold=0.5, unknown_threshold=1.0, plant_like=(), unknown_weights=(0.0, 1.0),
                     unknown_bias=0.0)
    sure, unsure = np.array([[0.9, 0.05, 0.05]]), np.array([[0.3, 0.35, 0.35]])
    near = NEAR.numpy()
    assert gate.verdicts(gate.scores(imagenet_logits(2), near, BANK, sure)) == ["species"]  # -log 0.9 < 1
    assert gate.verdicts(gate.scores(imagenet_logits(2), near, BANK, unsure)) == ["unknown_species"]  # -log .35 > 1
    with pytest.raises(ValueError, match="calibrated species probabilities"):
        gate.scores(imagenet_logits(2), near, BANK)
    # the legacy rule (k-NN distance alone) needs no probabilities
    assert tiny_gate().unknown_weights == (1.0, 0.0)
    legacy = {k: v for k, v in tiny_gate().to_dict().items()
              if k not in ("unknown_weights", "unknown_bias", "low_quality_sharpness", "low_quality_reject_threshold")}
    assert FlowerGate.from_dict(legacy) == tiny_gate()
    assert FlowerGate.from_dict(gate.to_dict()) == gate
    with pytest.raises(GateConfigError, match="unknown_weights"):
        tiny_gate(unknown_weights=(1.0,))


def test_gate_round_trips_and_validates():
    gate = tiny_gate()
    assert FlowerGate.from_dict(json.loads(json.dumps(gate.to_dict()))) == gate
    with pytest.raises(GateConfigError, match="knn_k"):
        FlowerGate.from_dict({**gate.to_dict(), "knn_k": 0})
    with pytest.raises(GateConfigError, match="plant_like"):
        FlowerGate.from_dict({**gate.to_dict(), "plant_like": [99]})
    with pytest.raises(GateConfigError, match="missing bias"):
        FlowerGate.from_dict({k: v for k, v in gate.to_dict().items() if k != "bias"})
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        gate.scores(np.zeros((1, 4)), NEAR.numpy(), BANK)


def test_plant_like_classes_are_found_by_wordnet_id():
    wnids = ["n00000001", PLANT_LIKE_WNIDS[0], "n00000002", PLANT_LIKE_WNIDS[-1]]
    assert plant_like_indices(wnids) == (1, 3)


def test_logistic_fit_separates_and_out_of_fold_scores_are_honest():
    rng = np.random.default_rng(0)
    flowers, others = rng.normal(0, 1, (60, 3)), rng.normal(0, 1, (40, 3))
    others[:, 0] += 4.0  # only the first column carries the signal
    x, y = np.concatenate([flowers, others]), np.r_[np.zeros(60), np.ones(40)]
    weights, bias = fit_logistic(x, y, l2=0.01)
    assert weights[0] > 5 * max(abs(weights[1]), abs(weights[2]))
    scores = x @ weights + bias
    assert roc_auc(scores[y == 1], scores[y == 0]) > 0.98
    # Pure noise: in-sample a flexible fit "separates" it; out of fold it cannot.
    noise = rng.normal(0, 1, (60, 40))
    labels = np.r_[np.zeros(30), np.ones(30)]
    w, b = fit_logistic(noise, labels, l2=0.001)
    in_sample = noise @ w + b
    out_of_fold = out_of_fold_scores(noise, labels, 0.001, folds=5)
    assert roc_auc(in_sample[labels == 1], in_sample[labels == 0]) > 0.95
    assert roc_auc(out_of_fold[labels == 1], out_of_fold[labels == 0]) < 0.8


def test_fit_gate_meets_its_targets_on_separable_data():
    rng = np.random.default_rng(1)
    classes = len(TINY_IMAGENET)

    def outputs(count, top, near):
        logits = rng.normal(0, 1, (count, classes))
        logits[:, top] += 6.0
        embeddings = (NEAR if near else FAR).repeat(count, 1).numpy() + rng.normal(0, 0.05, (count, 8))
        return Outputs(np.zeros((count, 3)), embeddings, np.zeros(count, dtype=np.int64), logits)

    val, nonflowers = outputs(80, 1, True), outputs(40, 0, False)
    gate, report = fit_gate(val, nonflowers, BANK, (1, 3), GateTargets(accept=0.95, reject=0.9, knn_k=3))
    flower_verdicts = gate.verdicts(gate.scores(val.imagenet_logits, val.embeddings, BANK))
    other_verdicts = gate.verdicts(gate.scores(nonflowers.imagenet_logits, nonflowers.embeddings, BANK))
    assert flower_verdicts.count("not_a_flower") <= 4 and other_verdicts.count("not_a_flower") >= 36
    assert report["oof_auroc"]["combined"] > 0.99 and report["folds"] == 5
    assert report["val_flowers"] == 80 and report["nonflowers"] == 40


# ------------------------------------------------------------------------------------------------ conformal sets


def test_conformal_scores_and_quantile_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    labels = np.array([0, 1, 2, 1])
    # RAPS score, penalty 0.1 beyond rank 1: cumulative mass down to the true class + 0.1 per extra rank.
    expected = [0.7, 0.8 + 0.1, 1.0 + 0.2, 0.75 + 0.1]
    np.testing.assert_allclose(true_class_scores(probabilities, labels, 0.1, 1), expected)
    # n = 4 at level 0.6: the ceil(5 * 0.6) = 3rd smallest score.
    rule = fit_conformal(probabilities, labels, 0.6, 0.1, 1)
    assert rule.qhat == pytest.approx(0.9)
    sets = rule.sets(np.array([[0.5, 0.3, 0.2], [0.95, 0.04, 0.01], [0.2, 0.3, 0.5]]))
    assert [list(s) for s in sets] == [[0, 1], [0], [2, 1]]  # 0.5, 0.8 + 0.1 = 0.9 in, 1.0 + 0.2 out; never empty


def test_conformal_sets_cover_at_the_level_on_synthetic_calibrated_data():
    rng = np.random.default_rng(0)

    def draw(count):
        logits = rng.normal(0, 2.0, (count, 10))
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = np.array([rng.choice(10, p=p) for p in probabilities])  # calibrated by construction
        return probabilities, labels

    calibration, test = draw(2000), draw(4000)
    for level in (0.8, 0.9):
        rule = fit_conformal(*calibration, level=level, penalty=0.0)
        row = coverage_and_size(rule, *test)
        assert level - 0.025 <= row["coverage"] <= level + 0.04, (level, row)
        assert 1.0 < row["mean_size"] < 10.0


def test_too_few_calibration_photos_give_every_class():
    rule = fit_conformal(np.full((5, 4), 0.25), np.arange(5) % 4, level=0.95)
    assert [len(s) for s in rule.sets(np.array([[0.97, 0.01, 0.01, 0.01]]))] == [4]


def test_penalty_selection_prefers_small_sets_that_still_cover():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3.0, (300, 6))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(6, p=p) for p in probabilities])
    penalty, report = select_penalty(probabilities, labels, level=0.8, margin=0.0, halves=20)
    chosen = report[penalty]
    assert chosen["worst_coverage"] >= 0.8
    assert all(row["mean_size"] >= chosen["mean_size"] or row["worst_coverage"] < 0.8 for row in report.values())


def test_conformal_config_validates():
    rule = ConformalSets(level=0.95, qhat=0.99, penalty=0.1, k_reg=1, calibration_images=510)
    assert ConformalSets.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    for bad in ({"level": 1.5}, {"qhat": "x"}, {"penalty": -1.0}, {"method": "aps"}):
        with pytest.raises(ConformalConfigError):
            ConformalSets.from_dict({**rule.to_dict(), **bad})


# ------------------------------------------------------------------------------------------------ artifact format


def test_artifact_round_trips_the_rule_and_the_imagenet_names(tiny_model_dir):
    module, metadata = load_artifact(tiny_model_dir / "model.pt")
    assert metadata.gate == tiny_gate() and metadata.imagenet_class_names == TINY_IMAGENET
    assert metadata.prediction_sets.level == 0.9
    assert next(module.imagenet.parameters()).dtype == torch.float32  # stored in half, computed in full
    with torch.inference_mode():
        assert module.imagenet_logits(torch.zeros(2, 3, 224, 224)).shape == (2, len(TINY_IMAGENET))
    assert ModelMetadata.from_dict(json.loads(metadata.to_json())) == metadata


def test_imagenet_view_is_stored_in_half_precision(tiny_model_dir):
    raw = torch.jit.load(str(tiny_model_dir / "model.pt"))
    assert {p.dtype for p in raw.imagenet.parameters()} == {torch.float16}
    assert raw.ood_bank_labels.dtype == torch.int16 and len(raw.ood_bank_labels) == len(raw.ood_bank)


def test_old_format_is_refused_with_the_upgrade_command(tiny_model_dir):
    _, metadata = load_artifact(tiny_model_dir / "model.pt")
    old = {**metadata.to_dict(), "format_version": 1, "ood": {"score": "knn_cosine", "threshold": 0.5, "k": 5}}
    with pytest.raises(ModelLoadError, match="--from-model"):
        ModelMetadata.from_dict(old)


def test_metadata_that_disagrees_with_itself_is_refused(tiny_model_dir):
    _, metadata = load_artifact(tiny_model_dir / "model.pt")
    data = metadata.to_dict()
    with pytest.raises(ModelLoadError, match="imagenet_class_names"):
        ModelMetadata.from_dict({**data, "imagenet_class_names": ["only one"]})
    with pytest.raises(ModelLoadError, match="gate"):
        ModelMetadata.from_dict({**data, "gate": {**data["gate"], "unknown_threshold": "far"}})
