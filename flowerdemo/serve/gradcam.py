"""Grad-CAM (Selvaraju et al. 2017) through the artifact's ``features``/``head`` methods, and its overlay.

TorchScript has no hooks, so the model exports ``features(x) -> [B, C, h, w]`` and ``head(f) -> logits``;
the gradient of a class logit with respect to the feature map comes from autograd through ``head`` alone.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image


Objective = Callable[[torch.Tensor], torch.Tensor]  # logits [1, N] -> the scalar whose evidence is mapped


def gradcam_maps(head: Callable[[torch.Tensor], torch.Tensor], feature_map: torch.Tensor,
                 class_indices: Sequence[int]) -> np.ndarray:
    """Heatmaps [K, h, w] in [0, 1] for one image's feature map [1, C, h, w], one per class index.

    weights_c = spatial mean of d logit_c / d features; map = ReLU(sum_c weights * features), scaled to max 1.
    A map with no positive evidence is all zeros (not NaN).
    """
    return _maps(head, feature_map, [lambda logits, i=int(index): logits[0, i] for index in class_indices])


def contrast_maps(head: Callable[[torch.Tensor], torch.Tensor], feature_map: torch.Tensor,
                  pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """"Why A and not B": per (a, b), where the evidence for class a *over* class b lies [P, h, w] in [0, 1].

    Grad-CAM of the logit difference a - b (contrastive explanations, Prabhushankar et al. 2020): regions that
    push both classes alike cancel out, so what remains is what tells them apart.
    """
    return _maps(head, feature_map, [lambda logits, a=int(a), b=int(b): logits[0, a] - logits[0, b]
                                     for a, b in pairs])


def _maps(head, feature_map: torch.Tensor, objectives: Sequence[Objective]) -> np.ndarray:
    """The Grad-CAM maths for any scalar objectives of the logits; the gradient flows through ``head`` only."""
    if feature_map.ndim != 4 or feature_map.shape[0] != 1:
        raise ValueError(f"feature_map must be [1, C, h, w], got {tuple(feature_map.shape)}")
    with torch.enable_grad():
        features = feature_map.detach().float().requires_grad_(True)
        logits = head(features)
        maps = []
        for objective in objectives:
            (gradient,) = torch.autograd.grad(objective(logits), features, retain_graph=True)
            weights = gradient[0].mean(dim=(1, 2))  # [C]
            maps.append(torch.relu((weights[:, None, None] * features[0]).sum(dim=0)).detach())
    return np.stack([normalize_map(m.numpy()) for m in maps]) if maps else np.zeros((0, *feature_map.shape[2:]))


def normalize_map(heatmap: np.ndarray) -> np.ndarray:
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros_like(heatmap, dtype=np.float32)
    return np.clip(heatmap / peak, 0.0, 1.0).astype(np.float32)


# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp (no matplotlib needed at run time).
_RAMP = np.array([[0.05, 0.03, 0.35], [0.0, 0.45, 0.85], [0.1, 0.8, 0.75], [0.95, 0.9, 0.1], [0.85, 0.1, 0.05]])


def _ramp_colours(values: np.ndarray) -> np.ndarray:
    """Exact ramp colours [..., 3] in [0, 1] for values in [0, 1] (piecewise-linear between the ramp's stops)."""
    positions = np.linspace(0.0, 1.0, len(_RAMP))
    return np.stack([np.interp(values, positions, _RAMP[:, channel]) for channel in range(3)], axis=-1)


# A lookup table, as matplotlib's colormaps use: one lookup per pixel instead of three interpolations (colouring
# a 224 px map took several ms with np.interp, a fraction of one this way), within one 8-bit level of the ramp.
_LEVELS = 1024
_LOOKUP = (_ramp_colours(np.linspace(0.0, 1.0, _LEVELS)) * 255).round().astype(np.uint8)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] uint8."""
    values = np.clip(np.nan_to_num(heatmap), 0.0, 1.0)
    return _LOOKUP[np.rint(values * (_LEVELS - 1)).astype(np.intp)]


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[h, w] in [0, 1] -> [H, W] for ``size`` = (W, H), bilinear on the values themselves (never overshoots)."""
    values = Image.fromarray(np.clip(np.nan_to_num(heatmap), 0.0, 1.0).astype(np.float32), mode="F")
    return np.asarray(values.resize(size, Image.Resampling.BILINEAR), dtype=np.float32).clip(0.0, 1.0)


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """Blend a [h, w] heatmap in [0, 1] over an RGB image of any size.

    The map is upsampled first and coloured after, as pytorch-grad-cam does: resizing an already coloured 7x7
    map would blend neighbouring colours into ones that are not on the ramp (blue and yellow make grey, not
    cyan). ``opacity`` 0 returns the image unchanged, 1 the heatmap alone.
    """
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be [h, w], got shape {heatmap.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    base = image.convert("RGB")
    colored = Image.fromarray(colorize(upsample(heatmap, base.size)))
    return Image.blend(base, colored, float(opacity))
