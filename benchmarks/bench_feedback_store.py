"""The feedback store alone, no web stack: N threads each save M distinct photos (every third carries a GPS EXIF
tag) into one FeedbackStore, then the folder is checked the way a reader sees it.

Prints the save latency (median, p95, max), saves a second, and the checks: records found, lost, duplicated,
photos without a record, photos that carry EXIF. ``python benchmarks/bench_feedback_store.py --threads 16
--saves 50 --size 1600x1200 [--dir DIR]`` (a temporary folder unless --dir; the store is left there with --dir).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowerdemo.core.verdict import Verdict  # noqa: E402
from flowerdemo.feedback import FeedbackStore, LabelKind, read_records  # noqa: E402


def gps_photo(index: int, size: tuple[int, int]) -> Image.Image:
    """A distinct photo (smooth gradient plus noise, so JPEG sizes look like a camera's) with GPS on every third."""
    rng = np.random.default_rng(index)
    width, height = size
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * rng.random(3, dtype=np.float32)
    pixels = np.clip(gradient + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if index % 3:
        return image
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=92)
    return Image.open(io.BytesIO(buffer.getvalue()))


def run(threads: int, saves: int, size: tuple[int, int], folder: Path) -> dict:
    store = FeedbackStore(folder, max_mb=100_000)
    photos = [gps_photo(index, size) for index in range(threads * saves)]  # made before timing starts
    latencies: list[float] = []
    answered: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def client(number: int) -> None:
        barrier.wait()
        for step in range(saves):
            index = number * saves + step
            started = time.perf_counter()
            saved = store.save(photos[index], f"species {index}", LabelKind.OTHER, top1="rose",
                               verdict=Verdict.SPECIES,
                               prediction_set=["rose", "carnation"], model_sha256="ab" * 32)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                answered.append(saved.record_id)

    workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    return {"store": store, "latencies": latencies, "answered": answered, "wall": wall}


def check(store: FeedbackStore, answered: list[str]) -> dict:
    records = read_records(store.root)
    found = [record["record_id"] for record in records]
    named = {record["file_name"] for record in records}
    photos = list(store.folder.glob("*.jpg"))
    with_exif = sum(bool(Image.open(path).getexif()) for path in photos)
    return {"records": len(records), "lost": len(set(answered) - set(found)),
            "duplicates": len(found) - len(set(found)),
            "photos_without_record": sum(path.name not in named for path in photos), "photos_with_exif": with_exif}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--saves", type=int, default=50, help="saves per thread")
    parser.add_argument("--size", default="1600x1200", help="photo size WIDTHxHEIGHT (default 1600x1200)")
    parser.add_argument("--dir", default=None, help="the feedback folder (default: a temporary one, removed)")
    args = parser.parse_args()
    size = tuple(int(part) for part in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.dir) if args.dir else Path(scratch) / "feedback"
        result = run(args.threads, args.saves, size, folder)
        checks = check(result["store"], result["answered"])
    latencies = sorted(result["latencies"])
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"{args.threads} threads x {args.saves} saves of {size[0]}x{size[1]} photos "
          f"({len(latencies)} saves in {result['wall']:.1f} s, {len(latencies) / result['wall']:.1f} saves/s)")
    print(f"save latency: median {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms")
    print("checks: " + ", ".join(f"{name} {value}" for name, value in checks.items()))
    bad = checks["lost"] or checks["duplicates"] or checks["photos_without_record"] or checks["photos_with_exif"]
    return 1 if bad or checks["records"] != len(latencies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
