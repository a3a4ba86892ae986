"""How several photos of one plant do against one photo: top-1 and prediction-set coverage, with the set
temperature fitted, the product and the mean of log-probabilities (``flowerdemo.core.combine``).

Sets of n photos of one class are drawn at random (seeded) from a collection: Flowers-102 ``val`` (the photos
the one-photo temperature and sets were fitted on) or ``test``, and ``elsewhere`` (photos from other collections
of known species: DATA/elsewhere, kind "known", its test share by the recipe's default field split). Every photo goes through the model's own rules
(``core.decision.decide``: calibrated probabilities, verdict, photo group), the photos of a set are combined by
``core.combine.combine`` and answered with the same prediction sets (``decide_from_probabilities``). The set
temperature is fitted by log-likelihood on ``--fit-on`` (default val) and reported beside the shipped rule.

The network's raw outputs per photo (logits, pooled embedding, ImageNet logits, sharpness) are computed once
and kept in ``--cache DIR/<collection>.npz`` (same layout as runs/extract.py writes).

    python scripts/measure_plant_sets.py --data DATA --collections val test elsewhere --draws 2000 --cache CACHE

DATA holds ``flowers102/`` (labels.csv: filename,label,split; images/) and ``elsewhere/`` (labels.csv, images/).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flowerdemo.core.artifact import load_artifact  # noqa: E402
from flowerdemo.core.combine import PlantPhoto, combine, fit_set_temperature, set_temperature  # noqa: E402
from flowerdemo.core.decision import decide, decide_from_probabilities  # noqa: E402
from flowerdemo.core.preprocess import eval_transform, load_image  # noqa: E402
from flowerdemo.core.verdict import Verdict  # noqa: E402
from flowerdemo.core.gate import pooled_embedding, sharpness  # noqa: E402
from flowerdemo.training.field import FieldSplit  # noqa: E402



def collection_items(data: Path, name: str, class_names) -> tuple[list[str], np.ndarray]:
    """(image paths, label indices) of a collection; ``elsewhere``: its test share's photos of known species."""
    if name in ("val", "test", "train"):
        rows = [r for r in csv.DictReader(open(data / "flowers102" / "labels.csv")) if r["split"] == name]
        return [str(data / "flowers102" / "images" / r["filename"]) for r in rows], np.array([int(r["label"]) for r in rows])
    # only the test share (the model trained on the train share and was calibrated on the calibration share)
    rows = [r for r in csv.DictReader(open(data / name / "labels.csv"))
            if r["kind"] == "known" and FieldSplit().part(r["filename"]) == "test"]
    index = {n: i for i, n in enumerate(class_names)}
    return ([str(data / name / "images" / r["filename"]) for r in rows],
            np.array([index[r["class_name"]] for r in rows]))


def raw_outputs(module, meta, paths, cache: Path | None, name: str) -> dict:
    files = np.array([Path(p).name for p in paths])
    target = cache / f"{name}.npz" if cache else None
    if target and target.is_file():
        stored = np.load(target)
        if "files" in stored.files:
            position = {f: i for i, f in enumerate(stored["files"])}
            if all(f in position for f in files):
                order = np.array([position[f] for f in files])
                return {k: stored[k][order] for k in ("logits", "emb", "imagenet", "sharp")}
    transform, out, start = eval_transform(meta.preprocess), {k: [] for k in ("logits", "emb", "imagenet", "sharp")}, time.time()
    with torch.inference_mode():
        for begin in range(0, len(paths), 32):
            batch = torch.stack([transform(load_image(p)) for p in paths[begin:begin + 32]])
            features = module.features(batch)
            out["logits"].append(module.head(features).float().numpy())
            out["emb"].append(pooled_embedding(features).numpy())
            out["imagenet"].append(module.imagenet_logits(batch).float().numpy())
            out["sharp"].append(sharpness(batch))
            print(f"\r{name}: {begin + len(batch)}/{len(paths)} photos, {time.time() - start:.0f} s", end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    result = {k: np.concatenate(v) for k, v in out.items()}
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, files=files, **result)
    return result


def draws(labels: np.ndarray, size: int, count: int, seed: int) -> np.ndarray:
    """[count, size] photo indices, each row ``size`` different photos of one class (classes drawn uniformly
    among those with enough photos)."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = [c for c, rows in by_class.items() if len(rows) >= size]
    return np.array([rng.choice(by_class[classes[rng.integers(len(classes))]], size, replace=False)
                     for _ in range(count)])


def measure(meta, decided, labels, sets, tau_of) -> dict:
    right, covered, sizes, species = 0, 0, [], 0
    for row in sets:
        photos = [PlantPhoto(str(i), decided.probabilities[i], decided.verdicts[i], int(decided.groups[i]), str(i))
                  for i in row]
        plant = combine(photos, temperature=tau_of)
        answer = decide_from_probabilities(meta, plant.probabilities[None], [plant.verdict], [plant.group])
        in_set = answer.sets[0] if answer.sets[0] is not None else [int(np.argmax(plant.probabilities))]
        truth = labels[row[0]]
        right += int(np.argmax(plant.probabilities)) == truth
        covered += truth in set(int(c) for c in in_set)
        sizes.append(len(in_set))
        species += plant.verdict in (None, Verdict.SPECIES)
    count = len(sets)
    return {"top1": right / count, "set_coverage": covered / count, "set_size": float(np.mean(sizes)),
            "called_species": species / count}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the folder holding flowers102/ (labels.csv, images/) and elsewhere/ (labels.csv, images/)")
    parser.add_argument("--model", default=str(ROOT / "weights" / "model.pt"))
    parser.add_argument("--collections", nargs="+", default=["val", "elsewhere"])
    parser.add_argument("--fit-on", default="val", help="the collection the set temperature is fitted on")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="folder for the raw outputs (<collection>.npz)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    module, meta = load_artifact(args.model)
    bank = module.ood_bank.float() if meta.gate is not None else None
    decided_by, labels_by = {}, {}
    for name in dict.fromkeys([args.fit_on, *args.collections]):
        paths, labels = collection_items(args.data, name, meta.class_names)
        raw = raw_outputs(module, meta, paths, args.cache, name)
        decided_by[name] = decide(meta, raw["logits"], raw["emb"], raw["imagenet"], raw["sharp"], bank)
        labels_by[name] = labels
    fitted = {}
    for size in sorted(s for s in args.sizes if s > 1):
        sets = draws(labels_by[args.fit_on], size, args.draws, args.seed + 1000)
        log_p = np.log(np.clip(decided_by[args.fit_on].probabilities, 1e-300, None))
        fitted[size] = fit_set_temperature(log_p, sets, labels_by[args.fit_on][sets[:, 0]])
    print(f"set temperature fitted on {args.fit_on} (log-likelihood): "
          + ", ".join(f"n={n}: {t:.2f}" for n, t in fitted.items()))
    rules = {"mean (shipped)": set_temperature, "product": lambda n: 1.0,
             f"fitted on {args.fit_on}": lambda n: fitted.get(n, 1.0)}
    level = meta.prediction_sets.level if meta.prediction_sets else None
    report = {"fitted_set_temperature": fitted, "set_level": level, "draws": args.draws, "results": {}}
    print(f"{'collection':10} {'n':>2} {'rule':18} {'top-1':>7} {'coverage':>9} {'set size':>9} {'species':>8}"
          f"   (sets at the {level:.0%} level)" if level else "")
    for name in args.collections:
        for size in args.sizes:
            sets = draws(labels_by[name], size, args.draws, args.seed + size)
            for rule, tau_of in (rules.items() if size > 1 else [("one photo", set_temperature)]):
                figures = measure(meta, decided_by[name], labels_by[name], sets, tau_of)
                report["results"].setdefault(name, {}).setdefault(str(size), {})[rule] = figures
                print(f"{name:10} {size:>2} {rule:18} {figures['top1']:7.2%} {figures['set_coverage']:9.2%} "
                      f"{figures['set_size']:9.2f} {figures['called_species']:8.1%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
