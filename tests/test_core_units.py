"""Pure cores: metrics, calibration, OOD scores, Grad-CAM maths and overlay, preprocessing config."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flowerdemo.core.decision import calibrated_probabilities
from flowerdemo.training import metrics
from flowerdemo.training.fitting.temperature import fit_temperature
from flowerdemo.serve.gradcam import colorize, contrast_maps, gradcam_maps, overlay
from flowerdemo.core.gate import knn_distance
from flowerdemo.training.fitting.gate import fpr_at_tpr, threshold_at_acceptance, threshold_with_widest_margin
from flowerdemo.core.preprocess import PreprocessConfig, PreprocessConfigError


def test_topk_and_confusion_metrics():
    logits = np.array([[3.0, 2, 1], [1, 3, 2], [3, 1, 2], [1, 2, 3]])
    labels = np.array([0, 2, 0, 1])
    assert metrics.topk_accuracy(logits, labels, 1) == 0.5
    assert metrics.topk_accuracy(logits, labels, 2) == 1.0
    matrix = metrics.confusion_matrix(logits.argmax(1), labels, 3)
    assert matrix.tolist() == [[2, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert metrics.macro_f1(matrix) == pytest.approx(1 / 3)
    assert metrics.most_confused_pairs(matrix, 5) == [(1, 2, 1), (2, 1, 1)]


def test_ece_is_zero_when_confidence_matches_accuracy():
    probabilities = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    assert metrics.expected_calibration_error(probabilities, labels) == pytest.approx(0.0)
    assert metrics.expected_calibration_error(np.array([[1.0, 0.0]] * 2), np.array([1, 1])) == pytest.approx(1.0)


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in positive for n in negative])
    assert metrics.roc_auc(positive, negative) == pytest.approx(pairwise)
    assert metrics.roc_auc(np.ones(3), np.ones(3)) == pytest.approx(0.5)


def test_temperature_scaling_recovers_overconfidence_and_improves_nll():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(3000, 10))
    probabilities = calibrated_probabilities(true_logits, 1.0)
    labels = np.array([rng.choice(10, p=row) for row in probabilities])
    overconfident = true_logits * 3.0
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert metrics.negative_log_likelihood(overconfident, labels, temperature) < metrics.negative_log_likelihood(overconfident, labels)


def test_knn_distance_is_higher_for_less_flower_like_inputs():
    # The bank lives in the first 4 dimensions; an embedding in the other 4 is orthogonal to all of it.
    bank = torch.nn.functional.normalize(torch.cat([torch.randn(20, 4), torch.zeros(20, 4)], dim=1), dim=1)
    near, far = bank[:2] * 3.0, torch.eye(8)[6:8]
    scores = knn_distance(torch.cat([near, far]), bank, k=1)
    assert np.abs(scores[:2]).max() < 1e-5
    np.testing.assert_allclose(scores[2:], 1.0, atol=1e-6)
    # k-th neighbour, not the nearest: a point that duplicates one bank row is still far at k=2 if the rest are far.
    lonely = torch.nn.functional.normalize(torch.cat([torch.eye(8)[5:6], torch.eye(8)[6:7].repeat(3, 1)]), dim=1)
    assert knn_distance(torch.eye(8)[5:6], lonely, k=1)[0] < 1e-6 < knn_distance(torch.eye(8)[5:6], lonely, k=2)[0]
    with pytest.raises(ValueError, match="feature bank"):
        knn_distance(torch.zeros(1, 8), None, 1)


def test_threshold_accepts_the_requested_fraction():
    flowers = np.arange(100, dtype=float)
    threshold = threshold_at_acceptance(flowers, 0.95)
    assert (flowers <= threshold).mean() == pytest.approx(0.95, abs=0.01)
    odd_sized = np.random.default_rng(0).normal(size=510)  # 95 % of 510 is not a whole number of photos
    assert (odd_sized <= threshold_at_acceptance(odd_sized, 0.95)).mean() >= 0.95
    assert fpr_at_tpr(flowers, np.array([1000.0, 1.0]), 0.95) == 0.5


def test_threshold_clears_both_targets_by_the_widest_margin():
    rng = np.random.default_rng(0)
    flowers, nonflowers = rng.normal(0.0, 1.0, 2000), rng.normal(4.0, 1.0, 2000)  # overlapping, but both targets fit
    threshold = threshold_with_widest_margin(flowers, nonflowers, accept=0.95, reject=0.90)
    flower_margin = (flowers <= threshold).mean() - 0.95
    nonflower_margin = (nonflowers > threshold).mean() - 0.90
    assert flower_margin > 0.02 and nonflower_margin > 0.02  # neither target sits on its edge
    assert abs(flower_margin - nonflower_margin) < 0.005  # the margins are balanced
    for shifted in (threshold - 0.05, threshold + 0.05):  # moving either way shrinks the smaller margin
        assert min((flowers <= shifted).mean() - 0.95, (nonflowers > shifted).mean() - 0.90) < min(flower_margin, nonflower_margin)


def test_threshold_keeps_the_flower_guarantee_and_centres_in_a_clear_gap():
    flowers = np.arange(100, dtype=float)
    separated = np.arange(200, 300, dtype=float)  # any threshold in [99, 204] accepts all flowers, rejects >= 95 %
    assert threshold_with_widest_margin(flowers, separated, accept=0.95, reject=0.90) == pytest.approx(151.5)
    overlapping = np.arange(50, 150, dtype=float)  # rejecting 90 % of these would reject most flowers
    threshold = threshold_with_widest_margin(flowers, overlapping, accept=0.95, reject=0.90)
    assert threshold == pytest.approx(threshold_at_acceptance(flowers, 0.95))


def _linear_head(weight, bias):
    def head(feature_map):
        return feature_map.mean(dim=(2, 3)) @ weight.T + bias
    return head


def test_gradcam_shapes_ranges_and_maths():
    torch.manual_seed(0)
    features = torch.rand(1, 6, 5, 7)
    weight, bias = torch.randn(4, 6), torch.zeros(4)
    maps = gradcam_maps(_linear_head(weight, bias), features, [2, 0, 3])
    assert maps.shape == (3, 5, 7) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # For a global-average-pool + linear head, Grad-CAM reduces to CAM with weights W_c / (h * w).
    expected = torch.relu((weight[2][:, None, None] / 35 * features[0]).sum(0)).numpy()
    assert expected.max() > 0  # seeded: class 2 has positive evidence, so the comparison below means something
    np.testing.assert_allclose(maps[0], expected / expected.max(), rtol=1e-5, atol=1e-6)


def test_contrast_map_is_grad_cam_of_the_logit_difference():
    torch.manual_seed(1)
    features = torch.rand(1, 6, 5, 7)
    weight = torch.randn(4, 6)
    weight[1] = torch.tensor([1.0, -0.5, 0.3, 0.0, 2.0, -1.0])  # channels 0, 2, 4 favour class 1 over class 3
    weight[3] = torch.tensor([0.2, 0.1, -0.4, 0.5, 0.0, 0.0])
    head = _linear_head(weight, torch.zeros(4))
    (contrast,) = contrast_maps(head, features, [(1, 3)])
    expected = torch.relu(((weight[1] - weight[3])[:, None, None] / 35 * features[0]).sum(0)).numpy()
    assert expected.max() > 0
    np.testing.assert_allclose(contrast, expected / expected.max(), rtol=1e-5, atol=1e-6)
    # Evidence both classes share cancels: two classes with the same weights have nothing between them.
    twin = _linear_head(torch.stack([weight[0], weight[0]]), torch.zeros(2))
    assert np.all(contrast_maps(twin, features, [(0, 1)]) == 0.0)
    # A over B is not B over A.
    (reverse,) = contrast_maps(head, features, [(3, 1)])
    assert not np.allclose(reverse, contrast)


def test_gradcam_without_positive_evidence_is_all_zero_not_nan():
    maps = gradcam_maps(_linear_head(-torch.ones(2, 3), torch.zeros(2)), torch.rand(1, 3, 4, 4), [0])
    assert np.all(maps == 0.0)
    with pytest.raises(ValueError, match=r"\[1, C, h, w\]"):
        gradcam_maps(_linear_head(torch.ones(2, 3), torch.zeros(2)), torch.rand(2, 3, 4, 4), [0])


def test_overlay_contract():
    image = Image.new("RGB", (50, 40), (10, 200, 30))
    heatmap = np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)
    assert overlay(image, heatmap, 0.0).tobytes() == image.tobytes()
    full = overlay(image, heatmap, 1.0)
    assert full.size == image.size and full.mode == "RGB"
    assert np.asarray(full).tolist() != np.asarray(image).tolist()
    assert colorize(np.array([[0.0, 1.0]])).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, heatmap, 1.5)
    with pytest.raises(ValueError, match="heatmap"):
        overlay(image, heatmap[None], 0.5)


def test_colorize_is_within_one_level_of_the_exact_ramp():
    from flowerdemo.serve.gradcam import _RAMP

    values = np.linspace(0.0, 1.0, 10_001)
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    exact = np.stack([np.interp(values, stops, _RAMP[:, c]) for c in range(3)], axis=-1) * 255
    colours = colorize(values[None])[0].astype(np.float64)
    assert np.abs(colours - exact).max() <= 1.0
    assert colours[0].tolist() == (_RAMP[0] * 255).round().tolist()
    assert colours[-1].tolist() == (_RAMP[-1] * 255).round().tolist()


def _distance_to_ramp(pixels: np.ndarray) -> np.ndarray:
    """Per pixel [N, 3], the distance (in 0-255 levels) to the nearest colour of the ramp, sampled finely."""
    ramp = colorize(np.linspace(0.0, 1.0, 2001)[None, :])[0].astype(np.float64)
    colours = np.unique(np.asarray(pixels, dtype=np.float64).round(1), axis=0)  # a few hundred distinct colours
    return np.sqrt(((colours[:, None, :] - ramp[None]) ** 2).sum(-1)).min(axis=1)


@pytest.mark.parametrize("opacity", [1.0, 0.6])
def test_every_overlay_colour_lies_on_the_ramp_blend(opacity):
    # A checkerboard of cold and hot cells: resizing the *coloured* 7x7 map (the old way) blends blue and
    # red into purples that are not on the ramp; upsampling the values first stays on it everywhere.
    heatmap = (np.indices((7, 7)).sum(0) % 2).astype(np.float32)
    black = Image.new("RGB", (224, 224), (0, 0, 0))
    pixels = np.asarray(overlay(black, heatmap, opacity), dtype=np.float64).reshape(-1, 3) / opacity
    assert _distance_to_ramp(pixels).max() <= 3.0 / opacity  # rounding to whole levels, twice
    old_way = np.asarray(Image.fromarray(colorize(heatmap)).resize((224, 224), Image.Resampling.BICUBIC))
    assert _distance_to_ramp(old_way.reshape(-1, 3)).max() > 30  # the check can fail, and did before


def test_preprocess_config_validates_and_round_trips():
    config = PreprocessConfig()
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PreprocessConfigError, match="bilinear, bicubic, nearest"):
        PreprocessConfig(interpolation="lanczos9")
    with pytest.raises(PreprocessConfigError, match="must not exceed"):
        PreprocessConfig(resize=200, crop=224)
    with pytest.raises(PreprocessConfigError, match="std must be positive"):
        PreprocessConfig(std=(0.2, 0.0, 0.2))
    with pytest.raises(PreprocessConfigError, match="missing"):
        PreprocessConfig.from_dict({"resize": 256})
