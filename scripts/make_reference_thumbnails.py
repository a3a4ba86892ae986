"""Write one small reference photo per class, from the TRAINING split, for the app's "what it looks like" row.

For each class the first training image in file-name order becomes ``flowerdemo/assets/references/NNN.jpg``
(NNN = the label index, 3 digits), plus ``index.json`` mapping class name -> file and ``sources.csv`` naming the
training image each one came from. The page shows them square (``object-fit: cover``) at 96 to about 144 px, so
they are centre-cropped square at 288 px: twice the largest size shown, sharp on a 2x (phone) screen. The data and its class names come through
``flowerdemo.training.data``, as for the trainer (``--dataset flowers102`` by default: torchvision's names).
The app looks references up by class name, so a model with other classes simply shows none.

    python scripts/make_reference_thumbnails.py [--dataset flowers102] [--data-path data] [--size 288] [--quality 75]
                                                [--keep-aspect]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flowerdemo.training.data import DataSource, DatasetLayoutError, add_data_arguments, load_split  # noqa: E402

DEFAULT_OUT = ROOT / "flowerdemo" / "assets" / "references"


def first_training_images(source: DataSource) -> tuple[dict[int, str], list[str]]:
    """(label index -> path of its first ``train`` image in file-name order, class names)."""
    samples, names = load_split(source, "train")
    chosen: dict[int, str] = {}
    for sample in sorted(samples, key=lambda s: Path(s.path).name):
        chosen.setdefault(sample.label, sample.path)
    return chosen, names


def thumbnail(source: Path, short_side: int, square: bool = True) -> Image.Image:
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        if square:  # the centre square: what the page's square frame shows of it anyway
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        scale = short_side / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS) if scale < 1 else image.copy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=288, help="short side in pixels (default 288: 2x the page's 144)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    parser.add_argument("--keep-aspect", action="store_true", help="keep the whole photo instead of its centre square")
    args = parser.parse_args(argv)

    try:
        chosen, names = first_training_images(DataSource.from_args(args))
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    missing = [names[i] for i in range(len(names)) if i not in chosen]
    if missing:
        print(f"error: no training image for {len(missing)} classes: {', '.join(missing[:5])}...", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    index, total, sources = {}, 0, ["file,source,class_name"]
    for label, name in enumerate(names):
        target = args.out / f"{label:03d}.jpg"
        thumbnail(Path(chosen[label]), args.size, square=not args.keep_aspect).save(target, "JPEG", quality=args.quality, optimize=True,
                                                       progressive=True)
        index[name] = target.name
        sources.append(f"{target.name},{Path(chosen[label]).name},{name}")
        total += target.stat().st_size
    (args.out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "sources.csv").write_text("\n".join(sources) + "\n", encoding="utf-8")
    print(f"wrote {len(index)} thumbnails ({total / 1024:.0f} KiB) and index.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
