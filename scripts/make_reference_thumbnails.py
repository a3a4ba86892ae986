"""Write one small reference photo per class, from the TRAINING split, for the app's "what it looks like" row.

For each class the first training image (in labels.csv order) becomes ``flowerdemo/assets/references/NNN.jpg``
(NNN = the label index, 3 digits), about 96 px on its short side, plus ``index.json`` mapping class name -> file
and ``sources.csv`` naming the training image each one came from.
The app looks references up by class name, so a model with other classes simply shows none.

    python scripts/make_reference_thumbnails.py [--data ../shared/data/flowers102] [--size 96] [--quality 80]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "flowers102"
DEFAULT_OUT = ROOT / "flowerdemo" / "assets" / "references"


def first_training_images(labels_csv: Path) -> dict[int, tuple[str, str]]:
    """label index -> (filename, class name) of the first ``train`` row for that label."""
    chosen: dict[int, tuple[str, str]] = {}
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "train":
                continue
            label = int(row["label"])
            chosen.setdefault(label, (row["filename"], row["class_name"]))
    return chosen


def thumbnail(source: Path, short_side: int) -> Image.Image:
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = short_side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS) if scale < 1 else image.copy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with labels.csv, classes.json, images/")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=96, help="short side in pixels")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    args = parser.parse_args(argv)

    names = json.loads((args.data / "classes.json").read_text(encoding="utf-8"))
    chosen = first_training_images(args.data / "labels.csv")
    missing = [names[i] for i in range(len(names)) if i not in chosen]
    if missing:
        print(f"error: no training image for {len(missing)} classes: {', '.join(missing[:5])}...", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    index, total, sources = {}, 0, ["file,source,class_name"]
    for label, name in enumerate(names):
        filename, csv_name = chosen[label]
        if csv_name != name:
            print(f"error: label {label} is {csv_name!r} in labels.csv but {name!r} in classes.json", file=sys.stderr)
            return 1
        target = args.out / f"{label:03d}.jpg"
        thumbnail(args.data / "images" / filename, args.size).save(
            target, "JPEG", quality=args.quality, optimize=True, progressive=True)
        index[name] = target.name
        sources.append(f"{target.name},{filename},{name}")
        total += target.stat().st_size
    (args.out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "sources.csv").write_text("\n".join(sources) + "\n", encoding="utf-8")
    print(f"wrote {len(index)} thumbnails ({total / 1024:.0f} KiB) and index.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
