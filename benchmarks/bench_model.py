"""Model-level CPU benchmark: artifact size, raw forward latency, predict() and explain() end to end.

    python benchmarks/bench_model.py                      # bundled weights/model.pt, 50 runs
    python benchmarks/bench_model.py --runs 100 --image examples/rose.jpg --model hf://owner/repo@rev
    python benchmarks/bench_model.py --no-ood             # also time predict() with the OOD rule removed
    python benchmarks/bench_model.py --batch-sizes 1 2 4 8 --threads 1   # per-photo forward cost by batch size

Numbers are wall-clock times of one call at batch 1 (medians over ``--runs`` after ``--warmup`` calls); they are
as noisy as the machine is busy, so compare medians taken on the same machine in the same conditions.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from flowerdemo.serve.hub import parse_source, resolve_model_file  # noqa: E402
from flowerdemo.serve.predict import FlowerClassifier  # noqa: E402


def default_image() -> str:
    """The first example image, else a synthetic photo-sized JPEG in a temp file."""
    found = sorted(glob.glob(str(ROOT / "examples" / "*.jpg")))
    if found:
        return found[0]
    rng = np.random.default_rng(0)
    handle = tempfile.NamedTemporaryFile(suffix=".jpg", delete=False)
    Image.fromarray(rng.integers(0, 256, (500, 667, 3), dtype=np.uint8)).save(handle, "JPEG", quality=90)
    handle.close()
    print(f"note: no example image found; using a synthetic 667x500 JPEG {handle.name}")
    return handle.name


def time_calls(fn, runs: int, warmup: int) -> list[float]:
    """Seconds per call, ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fmt(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1e3:8.2f} ms   p90 {percentile(times, 90) * 1e3:8.2f} ms   "
            f"min {min(times) * 1e3:8.2f} ms")


def time_interleaved(select, call, runs: int, warmup: int) -> dict:
    """Seconds per ``call()`` with ``select(True)`` and with ``select(False)`` in interleaved pairs (ABBA order),
    so a busy machine's slow phases hit both variants alike: {True: [...], False: [...]}."""
    timed = {True: [], False: []}
    for run in range(warmup + runs):
        for variant in ((True, False) if run % 2 == 0 else (False, True)):
            select(variant)
            start = time.perf_counter()
            call()
            if run >= warmup:
                timed[variant].append(time.perf_counter() - start)
    return timed


def forward_pass(classifier, batch: torch.Tensor) -> None:
    """The species network and, when the model has a verdict rule, the ImageNet view."""
    with torch.inference_mode():
        classifier.module(batch)
        if classifier.metadata.gate is not None:
            classifier.module.imagenet_logits(batch)


def print_batch_scaling(classifier, crop: int, sizes, runs: int, warmup: int) -> None:
    """Forward time per photo at each batch size, relative to batch 1."""
    per_photo = {}
    for size in sizes:
        batch = torch.randn(size, 3, crop, crop)
        per_photo[size] = statistics.median(time_calls(lambda: forward_pass(classifier, batch), runs, warmup)) / size
    base = per_photo.get(1)
    for size, seconds in per_photo.items():
        ratio = f"   x{seconds / base:.2f} of batch 1" if base else ""
        print(f"forward per photo at batch {size:<3}      median {seconds * 1e3:8.2f} ms{ratio}")


def print_parallel_views(classifier, image: str, runs: int, warmup: int) -> None:
    """explain() with the ImageNet view beside the species network, and after it, in interleaved pairs."""
    timed = time_interleaved(lambda parallel: setattr(classifier, "parallel_views", parallel),
                             lambda: classifier.explain(image, top_k=5, cam_classes=3), runs, warmup)
    classifier.parallel_views = None
    print(f"explain, views in parallel (interl.) {fmt(timed[True])}")
    print(f"explain, one after the other         {fmt(timed[False])}   ratio "
          f"{statistics.median(timed[True]) / statistics.median(timed[False]):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--model", default=None,
                        help="model source: model.pt, a folder, hf://owner/repo[@rev] (default: FLOWERDEMO_MODEL or weights/)")
    parser.add_argument("--image", default=None, help="image file for predict/explain (default: first examples/*.jpg)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-ood", action="store_true",
                        help="also time predict() with the model's verdict rule (ImageNet view + k-NN) removed, to "
                             "show its cost")
    parser.add_argument("--parallel-views", action="store_true",
                        help="also time explain() with the ImageNet view on a second thread and without "
                             "(interleaved); it matters with --threads 1, the app's setting on 2 cores")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="N",
                        help="also time the forward pass (species network + ImageNet view) per photo at these batch "
                             "sizes: what batching requests together (Gradio's batch=True) could save")
    args = parser.parse_args(argv)
    if args.batch_sizes and min(args.batch_sizes) < 1:
        parser.error("--batch-sizes must be >= 1")
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    image = args.image or default_image()
    if not os.path.isfile(image):
        parser.error(f"--image {image} not found")
    model_file = resolve_model_file(parse_source(args.model))
    load_start = time.perf_counter()
    classifier = FlowerClassifier.load(args.model)
    load_s = time.perf_counter() - load_start
    meta = classifier.metadata
    crop = meta.preprocess.crop
    with Image.open(image) as picture:
        image_size = picture.size

    print(f"torch {torch.__version__}  threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})  "
          f"cpus {os.cpu_count()}")
    print(f"model  {classifier.source}  arch {meta.arch}  classes {meta.num_classes}  "
          f"verdict rule {'ImageNet view + k-NN (k=%d)' % meta.gate.knn_k if meta.gate else 'none'}")
    print(f"model.pt  {os.path.getsize(model_file) / 1e6:.2f} MB ({os.path.getsize(model_file) / 2**20:.2f} MiB)   "
          f"load {load_s * 1e3:.0f} ms")
    print(f"image  {image}  {image_size[0]}x{image_size[1]}")
    print(f"runs   {args.runs} timed after {args.warmup} warm-up calls, batch 1, {crop}px")
    print()

    x = torch.randn(1, 3, crop, crop)

    def species_network():
        with torch.inference_mode():
            classifier.module(x)

    species_times = time_calls(species_network, args.runs, args.warmup)
    forward_times = time_calls(lambda: forward_pass(classifier, x), args.runs, args.warmup)
    print(f"species network only (module(x))    {fmt(species_times)}")
    print(f"forward (+ ImageNet view), {crop}px    {fmt(forward_times)}")

    predict_times = time_calls(lambda: classifier.predict(image), args.runs, args.warmup)
    print(f"predict (decode+preprocess+fwd+OOD) {fmt(predict_times)}")

    if args.no_ood:
        if meta.gate is None:
            print("predict without OOD                 (the model has no OOD rule: nothing to compare)")
        else:
            with_rule, without_rule = meta, dataclasses.replace(meta, gate=None)
            classifier.metadata = without_rule
            assert classifier.predict(image).is_flower is None  # the rule really is off
            classifier.metadata = with_rule
            timed = time_interleaved(
                lambda use_ood: setattr(classifier, "metadata", with_rule if use_ood else without_rule),
                lambda: classifier.predict(image), args.runs, args.warmup)
            classifier.metadata = with_rule
            diffs = [a - b for a, b in zip(timed[True], timed[False])]
            with_med, without_med = statistics.median(timed[True]), statistics.median(timed[False])
            print(f"predict with OOD    (interleaved)   {fmt(timed[True])}")
            print(f"predict without OOD (interleaved)   {fmt(timed[False])}")
            print(f"  OOD cost: median {with_med * 1e3:.2f} ms with vs {without_med * 1e3:.2f} ms without, "
                  f"ratio {with_med / without_med:.3f}; median paired difference {statistics.median(diffs) * 1e3:+.2f} ms")

    if args.batch_sizes:
        print_batch_scaling(classifier, crop, args.batch_sizes, max(5, args.runs // 4), args.warmup)

    explain_times = time_calls(lambda: classifier.explain(image, top_k=5, cam_classes=3), args.runs, args.warmup)
    print(f"explain (predict + top-3 Grad-CAM)  {fmt(explain_times)}   "
          f"(ImageNet view on a second thread: {classifier._use_parallel_views()})")
    if args.parallel_views and meta.gate is not None:
        print_parallel_views(classifier, image, args.runs, args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
