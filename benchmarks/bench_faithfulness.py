"""Are the heatmaps faithful? The confidence change when a map's most (or least) relevant pixels are removed.

For each val photo the model never trained on (the calibration half of ``val``), each map method ranks the 224 px
crop's pixels by relevance to the predicted class. A fraction of the pixels is then removed, most relevant first
(MoRF) or least relevant first (LeRF), and the calibrated probability of the originally predicted class is
measured again. A faithful map makes that probability fall fast under MoRF and hold under LeRF.

Removed pixels are not painted grey: sharp grey holes are themselves evidence the network reacts to, and their
shape leaks the map. As ROAD (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods") does, they are imputed from their neighbours: here by diffusion (Jacobi iterations of the
Laplace equation, kept pixels fixed) plus a little noise, which is the linear imputation ROAD solves exactly.

The score is ROAD's consistent summary: mean over fractions of p(LeRF) - p(MoRF) (higher is better). Methods:

- ``gradcam7``: what the app shows, Grad-CAM on the last feature map (7 x 7 at 224 px).
- ``gradcam14``: Grad-CAM on the last 14 x 14 stage (the gradient flows through the later blocks and the head).
- ``fused``: the geometric mean of the two (fine where both agree), a finer map candidate.
- ``centre`` and ``random``: baselines any map worth showing must beat.

``python benchmarks/bench_faithfulness.py --images 102`` (one photo per class); ``--per-class 2`` for more.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowerdemo.core.artifact import load_artifact  # noqa: E402
from flowerdemo.training.data import DataSource, training_and_selection_samples  # noqa: E402
from flowerdemo.serve.gradcam import gradcam_maps, normalize_map  # noqa: E402
from flowerdemo.core.preprocess import eval_transform, load_image  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
METHODS = ("gradcam7", "gradcam14", "fused", "centre", "random")


class UnsupportedBackbone(ValueError):
    """The finer map needs a timm EfficientNet-style backbone (conv_stem, bn1, blocks, conv_head, bn2)."""


@dataclass
class SplitNetwork:
    """The species network cut after its last 14 x 14 stage, so Grad-CAM can be taken there too. A network that
    averages each photo with its mirror image is cut in both views: its 14 x 14 map is the photo's map plus the
    mirror's map flipped back, as its 7 x 7 ``features`` are."""

    module: torch.jit.ScriptModule
    cut: int  # blocks[:cut] give the 14 x 14 map
    mirror: bool

    @classmethod
    def of(cls, module, crop: int) -> "SplitNetwork":
        backbone = getattr(module, "backbone", None)
        parts = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
        if backbone is None or not all(hasattr(backbone, name) for name in parts):
            raise UnsupportedBackbone(f"the finer map needs a backbone with {', '.join(parts)}")
        blocks = [block for _, block in backbone.blocks.named_children()]
        with torch.no_grad():
            h = backbone.bn1(backbone.conv_stem(torch.zeros(1, 3, crop, crop)))
            sizes = []
            for block in blocks:
                h = block(h)
                sizes.append(h.shape[-1])
        if 2 * sizes[-1] not in sizes:
            raise UnsupportedBackbone(f"no stage at twice the last map's resolution (stage sizes {sizes})")
        cut = max(i + 1 for i, size in enumerate(sizes) if size == 2 * sizes[-1])
        network = cls(module, cut, bool(getattr(module, "mirror_average", False)))
        network.check(crop)
        return network

    def check(self, crop: int) -> None:
        """The cut network must give the model's own logits, or the finer maps would explain another model."""
        x = torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = self.module.head(self.module.features(x))
            got = self.logits(*self.early_views(x))
        if not torch.allclose(got, expected, atol=1e-3, rtol=1e-3):
            raise UnsupportedBackbone(f"cutting the network changed its logits (max difference "
                                      f"{(got - expected).abs().max():.2e}); its features() is not the plain "
                                      f"backbone{' with a mirror average' if self.mirror else ''}")

    def blocks(self):
        return [block for _, block in self.module.backbone.blocks.named_children()]

    def early(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.module.backbone
        h = backbone.bn1(backbone.conv_stem(x))
        for block in self.blocks()[:self.cut]:
            h = block(h)
        return h

    def early_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 14 x 14 map of the photo (and of its mirror image, for a mirror-averaging network)."""
        return [self.early(x)] + ([self.early(x.flip(3))] if self.mirror else [])

    def late(self, h: torch.Tensor) -> torch.Tensor:
        backbone = self.module.backbone
        for block in self.blocks()[self.cut:]:
            h = block(h)
        return backbone.bn2(backbone.conv_head(h))

    def logits(self, *views: torch.Tensor) -> torch.Tensor:
        if not self.mirror:
            return self.module.head(self.late(views[0]))
        plain, mirrored = views
        return self.module.head(0.5 * (self.late(plain) + self.late(mirrored).flip(3)))


def gradcam14(network: SplitNetwork, image: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM at the 14 x 14 stage: per view, the gradient-weighted sum of its channels; the mirror view's map
    flipped back and added; then ReLU and scaling, as :func:`flowerdemo.serve.gradcam.gradcam_maps` does at 7 x 7."""
    with torch.no_grad():
        views = [view.detach().requires_grad_(True) for view in network.early_views(image)]
    with torch.enable_grad():
        logit = network.logits(*views)[0, class_index]
        gradients = torch.autograd.grad(logit, views)
    total = 0
    for index, (view, gradient) in enumerate(zip(views, gradients)):
        weighted = (gradient[0].mean(dim=(1, 2))[:, None, None] * view[0].detach()).sum(dim=0)
        total = total + (weighted.flip(1) if index == 1 else weighted)
    return normalize_map(torch.relu(total).numpy())


def resize_map(heatmap: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def fused(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Geometric mean of the 7 x 7 map (upsampled to the fine grid) and the 14 x 14 map, scaled to max 1."""
    return normalize_map(np.sqrt(np.clip(resize_map(coarse, fine.shape[-1]), 0, 1) * np.clip(fine, 0, 1)))


def centre_prior(size: int = 14) -> np.ndarray:
    axis = np.linspace(-1.0, 1.0, size)
    return np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 0.5 ** 2)).astype(np.float32)


def removal_masks(heatmap: np.ndarray, crop: int, fractions, most_relevant_first: bool,
                  rng: np.random.Generator) -> np.ndarray:
    """[len(fractions), crop, crop] booleans, True where a pixel is removed. Ties (flat regions of an upsampled
    map) are broken at random, so a constant map removes random pixels rather than the top rows."""
    values = resize_map(heatmap, crop).ravel()
    jitter = rng.random(values.shape) * 1e-6
    order = np.argsort(-(values + jitter) if most_relevant_first else values + jitter, kind="stable")
    masks = np.zeros((len(fractions), crop * crop), dtype=bool)
    for row, fraction in enumerate(fractions):
        masks[row, order[:int(round(fraction * values.size))]] = True
    return masks.reshape(len(fractions), crop, crop)


def impute(images: torch.Tensor, removed: torch.Tensor, iterations: int = 20, noise: float = 0.05,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the removed pixels [B, H, W] of normalised images [B, 3, H, W] from their neighbours.

    Diffusion: each removed pixel becomes the mean of its four neighbours, again and again, kept pixels fixed,
    which converges to ROAD's linear imputation. It starts from the same fill at half the resolution (down to
    about 16 px), so a few iterations per level reach across large holes. Then ROAD's small noise, so the network
    cannot read the filled shape from perfectly smooth patches.
    """
    keep = (~removed[:, None]).to(images.dtype)
    filled = _diffuse(images, keep, iterations)
    jitter = torch.randn(filled.shape, generator=generator, dtype=images.dtype) * noise
    return filled + jitter * (1.0 - keep)


def _diffuse(values: torch.Tensor, keep: torch.Tensor, iterations: int) -> torch.Tensor:
    height, width = values.shape[-2:]
    if min(height, width) >= 32:
        pooled_keep = F.avg_pool2d(keep, 2, ceil_mode=True)
        pooled = F.avg_pool2d(values * keep, 2, ceil_mode=True) / pooled_keep.clamp(min=1e-6)
        coarse = _diffuse(pooled, (pooled_keep > 0).to(values.dtype), iterations)
        start = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    else:
        start = (values * keep).sum(dim=(2, 3), keepdim=True) / keep.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    hole = 1.0 - keep
    filled = values * keep + start * hole
    for _ in range(iterations):
        padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
        neighbours = 0.25 * (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1]
                             + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:])
        filled = values * keep + neighbours * hole
    return filled


def probabilities(module, images: torch.Tensor, temperature: float, batch: int = 16) -> torch.Tensor:
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            outputs.append(torch.softmax(module.head(module.features(chunk)).float() / temperature, dim=1))
    return torch.cat(outputs)


def method_maps(network: SplitNetwork, module, image: torch.Tensor, features: torch.Tensor, class_index: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each method's map of one photo ([1, 3, H, W]; ``features``: its 7 x 7 feature map) for ``class_index``."""
    coarse = gradcam_maps(module.head, features.clone(), [class_index])[0]
    fine = gradcam14(network, image, class_index)
    return {"gradcam7": coarse, "gradcam14": fine, "fused": fused(coarse, fine),
            "centre": centre_prior(fine.shape[-1]), "random": rng.random(fine.shape).astype(np.float32)}


def score_photo(network, module, image: torch.Tensor, temperature: float, crop: int, seed: int) -> dict:
    """{method: {"morf": [p per fraction], "lerf": [...]}} plus the unperturbed probability under "p0"."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        features = module.features(image)
        base = torch.softmax(module.head(features).float() / temperature, dim=1)[0]
    class_index = int(base.argmax())
    maps = method_maps(network, module, image, features, class_index, rng)
    masks, keys = [], []
    for method in METHODS:
        for order, first in (("morf", True), ("lerf", False)):
            masks.append(removal_masks(maps[method], crop, FRACTIONS, first, rng))
            keys.append((method, order))
    removed = torch.from_numpy(np.concatenate(masks))
    perturbed = impute(image.expand(len(removed), -1, -1, -1), removed, generator=generator)
    scores = probabilities(module, perturbed, temperature)[:, class_index].numpy().reshape(len(keys), len(FRACTIONS))
    result: dict = {"p0": float(base[class_index])}
    for (method, order), row in zip(keys, scores):
        result.setdefault(method, {})[order] = row.tolist()
    return result


def road_gap(scores: dict) -> float:
    """ROAD's consistent summary for one photo and method: mean over fractions of p(LeRF) - p(MoRF)."""
    return float(np.mean(np.asarray(scores["lerf"]) - np.asarray(scores["morf"])))


def select_photos(model_meta, data: DataSource, per_class: int):
    """The val photos the model never trained on (its calibration half), ``per_class`` of each class."""
    recipe = model_meta.training_args
    _, held_out, _ = training_and_selection_samples(
        data, recipe.get("train_split", "train"), recipe.get("val_split", "val"),
        float(recipe.get("val_fraction_for_training") or 0.0))
    chosen, counts = [], {}
    for sample in held_out:
        if counts.get(sample.label, 0) < per_class:
            chosen.append(sample)
            counts[sample.label] = counts.get(sample.label, 0) + 1
    return chosen


def summarise(results: list[dict], report: Callable[[str], None] = print) -> dict:
    gaps = {method: [road_gap(r[method]) for r in results] for method in METHODS}
    report(f"{'method':<10} {'ROAD gap':>9} {'±se':>6}   " + "  ".join(f"MoRF@{f:.0%}" for f in FRACTIONS)
           + "   " + "  ".join(f"LeRF@{f:.0%}" for f in FRACTIONS))
    p0 = statistics.mean(r["p0"] for r in results)
    for method in METHODS:
        morf = np.mean([r[method]["morf"] for r in results], axis=0)
        lerf = np.mean([r[method]["lerf"] for r in results], axis=0)
        values = gaps[method]
        se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        report(f"{method:<10} {statistics.mean(values):>9.4f} {se:>6.4f}   "
               + "  ".join(f"{v:>8.3f}" for v in morf) + "   " + "  ".join(f"{v:>8.3f}" for v in lerf))
    report(f"(mean probability of the predicted class before removal: {p0:.3f}; higher gap = more faithful)")
    for other in ("gradcam14", "fused", "centre", "random"):
        diffs = np.asarray(gaps[other]) - np.asarray(gaps["gradcam7"])
        se = diffs.std(ddof=1) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        wins = int((diffs > 0).sum())
        report(f"{other} - gradcam7: {diffs.mean():+.4f} ± {se:.4f} (paired, se); better on {wins}/{len(diffs)} photos")
    return gaps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "weights"), help="model folder or model.pt")
    parser.add_argument("--dataset", default="flowers102", choices=("flowers102", "imagefolder", "csv"))
    parser.add_argument("--data-path", default="data")
    parser.add_argument("--per-class", type=int, default=1, help="held-out val photos per class")
    parser.add_argument("--images", type=int, default=None, help="stop after this many photos")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    path = Path(args.model)
    module, meta = load_artifact(path / "model.pt" if path.is_dir() else path)
    crop = meta.preprocess.crop
    try:
        network = SplitNetwork.of(module, crop)
    except UnsupportedBackbone as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    photos = select_photos(meta, DataSource(args.dataset, args.data_path), args.per_class)[:args.images]
    transform = eval_transform(meta.preprocess)
    print(f"model {args.model}  arch {meta.arch}  T {meta.temperature:.3f}  14x14 map after blocks[:{network.cut}]")
    print(f"{len(photos)} held-out val photos; fractions removed {', '.join(f'{f:.0%}' for f in FRACTIONS)}; "
          f"torch threads {torch.get_num_threads()}")
    results, started = [], time.perf_counter()
    for index, sample in enumerate(photos):
        image = transform(load_image(sample.path)).unsqueeze(0)
        results.append(score_photo(network, module, image, meta.temperature, crop, args.seed + index))
        if (index + 1) % 20 == 0:
            print(f"  {index + 1}/{len(photos)} photos, {time.perf_counter() - started:.0f} s", flush=True)
    summarise(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
