"""Memory soak: many sequential ``classifier.explain`` calls (what each app request does), watching RSS.

    python benchmarks/memory_soak.py                          # bundled weights/, 1000 requests
    python benchmarks/memory_soak.py --requests 200 --image examples/rose.jpg --model hf://owner/repo@rev

Prints resident memory at start (model loaded), after the warm-up, at checkpoints and at the end, and the growth
after warm-up: a leak shows as growth that keeps rising with the number of requests, while a one-off rise
that levels off is the allocator settling. Measurement only: it always exits 0 and judges nothing.
"""
from __future__ import annotations

import argparse
import gc
import glob
import io
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from flowerdemo.serve.predict import FlowerClassifier  # noqa: E402

MB = 1024 * 1024


def rss_mb() -> float:
    """Current resident set size (Linux /proc), else the peak so far (getrusage, the only portable figure)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MB if sys.platform == "darwin" else peak / 1024


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def default_image_bytes() -> tuple[str, bytes]:
    """The first image in examples/, else a generated photo-sized JPEG."""
    found = sorted(glob.glob(str(ROOT / "examples" / "*.jpg")))
    if found:
        return found[0], Path(found[0]).read_bytes()
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (500, 667, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return "generated 667x500 JPEG", buffer.getvalue()


def get_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="explain() calls after the warm-up (default 1000)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before the baseline (default 20)")
    parser.add_argument("--checkpoints", type=int, default=10, help="RSS readings during the run (default 10)")
    parser.add_argument("--image", default=None, help="image file (default: first examples/*.jpg, else generated)")
    parser.add_argument("--model", default=None, help="model source (default: $FLOWERDEMO_MODEL, else weights/)")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--cam-classes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    return parser.parse_args(argv)


def soak(classifier, data: bytes, args) -> list[tuple[int, float, float]]:
    """(requests done, RSS MB, mean ms per request since the previous checkpoint) at each checkpoint."""
    every = max(1, args.requests // max(1, args.checkpoints))
    readings, started = [], time.perf_counter()
    for done in range(1, args.requests + 1):
        classifier.explain(data, top_k=args.top_k, cam_classes=args.cam_classes)
        if done % every == 0 or done == args.requests:
            gc.collect()
            elapsed = time.perf_counter() - started
            readings.append((done, rss_mb(), 1000 * elapsed / (done - (readings[-1][0] if readings else 0))))
            started = time.perf_counter()
    return readings


def main(argv=None) -> int:
    args = get_args(argv)
    name, data = (args.image, Path(args.image).read_bytes()) if args.image else default_image_bytes()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    before_model = rss_mb()
    classifier = FlowerClassifier.load(args.model, revision=args.revision)
    gc.collect()
    start = rss_mb()
    print(f"model {classifier.source}; image {name} ({len(data):,} bytes)")
    print(f"RSS before loading the model  {before_model:8.1f} MB")
    print(f"RSS at start (model loaded)   {start:8.1f} MB")
    for _ in range(args.warmup):
        classifier.explain(data, top_k=args.top_k, cam_classes=args.cam_classes)
    gc.collect()
    warm = rss_mb()
    print(f"RSS after {args.warmup} warm-up calls    {warm:8.1f} MB")
    print(f"{'requests':>9}  {'RSS MB':>8}  {'growth MB':>9}  {'ms/request':>10}")
    readings = soak(classifier, data, args)
    for done, rss, ms in readings:
        print(f"{done:9d}  {rss:8.1f}  {rss - warm:+9.1f}  {ms:10.1f}")
    end = readings[-1][1] if readings else rss_mb()
    print(f"RSS at end                    {end:8.1f} MB")
    print(f"growth after warm-up          {end - warm:+8.1f} MB over {args.requests} requests")
    if len(readings) >= 3:
        done, rss = np.array([r[0] for r in readings], float), np.array([r[1] for r in readings])
        slope = np.polyfit(done, rss, 1)[0] * 1000
        print(f"trend over the checkpoints    {slope:+8.1f} MB per 1000 requests (least squares; "
              f"RSS ranged {rss.min():.1f}..{rss.max():.1f} MB)")
    print(f"peak RSS                      {peak_rss_mb():8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
