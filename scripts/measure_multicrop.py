"""Does averaging several views of a photo (multi-crop test-time augmentation) help on photos from elsewhere?

The app looks at one centre crop (and its mirror image, when the model averages the two). This script compares
top-1 on the test share of a labels.csv folder (photos never trained or calibrated on, by the model's recipe's
split) for: the centre crop; the centre crop plus the whole photo squeezed to the crop size; the five crops
(centre and four corners); and all six. Each view costs one more forward pass, so the cost is the view count.

    python scripts/measure_multicrop.py --model weights --data DATA/webflowers [--limit 400]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowerdemo.core.artifact import load_artifact  # noqa: E402
from flowerdemo.core.preprocess import _pil_interpolation, cap_aspect_ratio, eval_transform, load_image  # noqa: E402
from flowerdemo.training.field import ANSWERED_KINDS, field_part, read_field_labels  # noqa: E402
from flowerdemo.training.recipe import Recipe  # noqa: E402

VIEW_SETS = {"centre": ("centre",), "centre + whole": ("centre", "whole"),
             "five crops": ("centre", "top left", "top right", "bottom left", "bottom right"),
             "five crops + whole": ("centre", "top left", "top right", "bottom left", "bottom right", "whole")}


def views(image, config) -> dict:
    """name -> normalised [3, crop, crop] tensor."""
    from torchvision import transforms as T

    image = cap_aspect_ratio(image)
    resized = T.Resize(config.resize, interpolation=_pil_interpolation(config.interpolation))(image)
    crop, (width, height) = config.crop, resized.size
    corners = {"top left": (0, 0), "top right": (width - crop, 0), "bottom left": (0, height - crop),
               "bottom right": (width - crop, height - crop)}
    pictures = {name: resized.crop((x, y, x + crop, y + crop)) for name, (x, y) in corners.items()}
    pictures["whole"] = T.Resize((crop, crop), interpolation=_pil_interpolation(config.interpolation))(image)
    normalise = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize(config.mean, config.std)])
    # the centre view is the app's own transform (core.preprocess.eval_transform), not a copy of it
    return {"centre": eval_transform(config)(image), **{name: normalise(p) for name, p in pictures.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights")
    parser.add_argument("--data", required=True, help="a labels.csv folder of photos from elsewhere")
    parser.add_argument("--limit", type=int, default=None, help="the first N test photos (in file order)")
    args = parser.parse_args(argv)
    path = Path(args.model) / "model.pt" if Path(args.model).is_dir() else Path(args.model)
    module, meta = load_artifact(path)
    index = {name: i for i, name in enumerate(meta.class_names)}
    split = Recipe.from_dict(meta.training_args).field_split
    rows = [r for r in field_part(read_field_labels(args.data), split, "test")
            if r.kind in ANSWERED_KINDS and r.labels(index)][: args.limit]
    right = {name: [] for name in VIEW_SETS}
    with torch.inference_mode():
        for row in rows:
            pictures = views(load_image(row.path), meta.preprocess)
            names = list(pictures)
            log_p = torch.log_softmax(module(torch.stack([pictures[n] for n in names])) / meta.temperature, dim=1)
            by_view = dict(zip(names, log_p))
            for label, chosen in VIEW_SETS.items():
                mean = torch.stack([by_view[n] for n in chosen]).mean(0)
                right[label].append(int(mean.argmax()) in row.labels(index))
    print(f"{len(rows)} test-share photos of {Path(args.data).name} with a right answer among the model's classes")
    for label, hits in right.items():
        print(f"{label:>20}: top-1 {np.mean(hits):.2%} ({len(VIEW_SETS[label])} views, "
              f"{len(VIEW_SETS[label])}x the compute)")


if __name__ == "__main__":
    main()
