"""The faithfulness benchmark's measuring parts: removal by rank, ROAD-style imputation, the summary score."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_faithfulness import fused, impute, removal_masks, road_gap  # noqa: E402


def test_removal_masks_take_the_most_or_least_relevant_pixels_first():
    heatmap = np.zeros((7, 7), dtype=np.float32)
    heatmap[:, 5:] = 1.0  # the right two columns are all the evidence
    rng = np.random.default_rng(0)
    most = removal_masks(heatmap, 70, (0.1, 0.2), True, rng)
    least = removal_masks(heatmap, 70, (0.1, 0.2), False, rng)
    assert most.shape == (2, 70, 70) and most.dtype == bool
    assert [int(m.sum()) for m in most] == [490, 980]  # exactly the fraction, ties broken
    assert most[0][:, :55].sum() == 0  # only where the upsampled map is at its peak
    assert least[1][:, 45:].sum() == 0  # only where it is zero
    assert most[0][:, 55:].any(axis=0).all()  # ties broken at random, not column by column
    # Nested: removing 20 % removes the 10 % first.
    assert not (most[0] & ~most[1]).any()


def test_imputation_keeps_kept_pixels_and_fills_holes_from_neighbours():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 96), indexing="ij")
    image = torch.stack([yy, xx, yy + xx])[None]  # linear, so the Laplace fill is exact
    hole = torch.zeros(1, 96, 96, dtype=torch.bool)
    hole[:, 30:70, 20:60] = True
    filled = impute(image, hole, noise=0.0)
    assert torch.equal(filled[:, :, ~hole[0]], image[:, :, ~hole[0]])
    assert (filled - image)[:, :, hole[0]].abs().max() < 0.15
    # A grey fill would miss by up to the ramp's value inside the hole.
    assert image[:, :, hole[0]].abs().max() > 0.5
    noisy = impute(image, hole, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy[:, :, ~hole[0]], image[:, :, ~hole[0]])
    assert 0.03 < (noisy - filled)[:, :, hole[0]].std() < 0.07


def test_road_gap_rewards_maps_whose_removal_hurts_first():
    faithful = {"morf": [0.5, 0.2], "lerf": [0.95, 0.9]}
    unfaithful = {"morf": [0.95, 0.9], "lerf": [0.5, 0.2]}
    assert road_gap(faithful) == pytest.approx(0.575)
    assert road_gap(unfaithful) == pytest.approx(-0.575)


def test_fused_map_is_high_only_where_both_maps_agree():
    coarse = np.zeros((7, 7), dtype=np.float32)
    coarse[:, :4] = 1.0
    fine = np.zeros((14, 14), dtype=np.float32)
    fine[:7] = 1.0
    both = fused(coarse, fine)
    assert both.shape == (14, 14) and both.max() == pytest.approx(1.0)
    assert both[:7, :6].min() > 0.9 and both[7:].max() == 0.0 and both[:, 9:].max() < 0.1
