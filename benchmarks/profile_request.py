"""Where one ``/classify`` request spends its time, part by part, against a real ``python app.py``.

    python benchmarks/profile_request.py                 # 30 requests with the first examples/*.jpg
    python benchmarks/profile_request.py --requests 50 --image examples/rose.jpg

It speaks Gradio's own HTTP protocol (what ``gradio_client`` and the browser do) and times each step:

- **upload**: ``POST /gradio_api/upload`` of the photo;
- **join**: ``POST /gradio_api/queue/join`` until the server accepts the event;
- **queue wait**: from joining until the server's ``process_starts`` message;
- **processing**: ``process_starts`` to ``process_completed`` (the handler plus Gradio's output
  post-processing: saving/caching result files, building the JSON);
- **handler**: the app's own ``/classify`` callback, timed in this process on the same photo with the same
  model (the server's work is the same code); *post-processing* is processing minus that median;
- **downloads**: each result file fetched, one after another, as ``gradio_client`` does by default.

Medians over ``--requests`` sequential requests; the server is stopped at the end, also on errors.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_app import AppServer, example_images, exit_on_sigterm, percentile, stop_and_report  # noqa: E402


def classify_dependency(client, url: str) -> tuple[int, str]:
    """(fn index, trigger id) of the public /classify event, from the app's own config."""
    config = client.get(f"{url}config").json()
    for index, dependency in enumerate(config["dependencies"]):
        if dependency.get("api_name") == "classify":
            targets = dependency.get("targets") or [[None]]
            return dependency.get("id", index), targets[0][0]
    raise RuntimeError("the app has no /classify endpoint")


def file_urls(value) -> list[str]:
    """Every file URL inside an output value (galleries nest them)."""
    if isinstance(value, dict):
        if isinstance(value.get("url"), str) and value.get("path"):
            return [value["url"]]
        return [url for item in value.values() for url in file_urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in file_urls(item)]
    return []


def one_request(client, url: str, image: Path, fn_index: int, trigger: int | None, opacity: float) -> dict:
    """The parts of one request, in milliseconds, plus the sizes of the files it returned."""
    parts = {}
    start = time.perf_counter()
    with image.open("rb") as handle:
        uploaded = client.post(f"{url}gradio_api/upload", files={"files": (image.name, handle, "image/jpeg")})
    uploaded.raise_for_status()
    parts["upload"] = (time.perf_counter() - start) * 1e3
    payload = {"path": uploaded.json()[0], "orig_name": image.name, "meta": {"_type": "gradio.FileData"}}
    session = uuid.uuid4().hex
    start = time.perf_counter()
    joined = client.post(f"{url}gradio_api/queue/join", json={
        "data": [payload, opacity], "event_data": None, "fn_index": fn_index, "trigger_id": trigger,
        "session_hash": session})
    joined.raise_for_status()
    parts["join"] = (time.perf_counter() - start) * 1e3
    joined_at = time.perf_counter()
    started_at = None
    output = None
    with client.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            kind = message.get("msg")
            if kind == "process_starts":
                started_at = time.perf_counter()
            elif kind == "process_completed":
                if not message.get("success"):
                    raise RuntimeError(f"/classify failed: {str(message.get('output'))[:200]}")
                output = message["output"]["data"]
                break
    done_at = time.perf_counter()
    started_at = started_at or joined_at
    parts["queue wait"] = (started_at - joined_at) * 1e3
    parts["processing"] = (done_at - started_at) * 1e3
    downloads, sizes = [], []
    for file_url in file_urls(output):
        start = time.perf_counter()
        response = client.get(file_url)
        response.raise_for_status()
        downloads.append((time.perf_counter() - start) * 1e3)
        sizes.append(len(response.content))
    parts["downloads"] = sum(downloads)
    parts["total"] = sum(parts[key] for key in ("upload", "join", "queue wait", "processing", "downloads"))
    return {"parts": parts, "download_each": downloads, "sizes": sizes}


def handler_median(image: Path, opacity: float, calls: int) -> float:
    """The /classify callback alone, in this process, on the bundled (or FLOWERDEMO_MODEL) model."""
    import torch

    from flowerdemo import ui

    torch.set_num_threads(1)  # as the server does with its default concurrency of 2 on 2 cores
    classify = ui.make_classify(ui.LazyModel(ui.default_loader))
    for _ in range(3):
        classify(str(image), opacity)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        classify(str(image), opacity)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", "-n", type=int, default=30)
    parser.add_argument("--image", default=None, help="photo to send (default: the first examples/*.jpg)")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--server-env", action="append", metavar="KEY=VALUE", default=[],
                        help="extra environment for the server (repeatable)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    image = Path(args.image or example_images()[0])
    import httpx

    extra_env = dict(pair.split("=", 1) for pair in args.server_env)
    exit_on_sigterm()
    server = AppServer(extra_env=extra_env)
    try:
        print(f"ready in {server.start():.2f} s; image {image}")
        with httpx.Client(timeout=60) as client:
            fn_index, trigger = classify_dependency(client, server.url)
            one_request(client, server.url, image, fn_index, trigger, args.opacity)  # loads the model
            runs = [one_request(client, server.url, image, fn_index, trigger, args.opacity)
                    for _ in range(args.requests)]
    finally:
        stop_and_report(server)
    handler = handler_median(image, args.opacity, min(args.requests, 20))
    names = list(runs[0]["parts"])
    print(f"\n{args.requests} sequential requests; milliseconds (median, p95):")
    for name in names:
        values = [run["parts"][name] for run in runs]
        print(f"  {name:12s} {statistics.median(values):7.1f}  {percentile(values, 95):7.1f}")
        if name == "processing":
            processing = statistics.median(values)
            print(f"    handler    {handler:7.1f}           (in process, same code and model)")
            print(f"    post-proc. {processing - handler:7.1f}           (processing minus handler)")
    each = list(zip(*[run["download_each"] for run in runs]))
    sizes = runs[-1]["sizes"]
    for index, (values, size) in enumerate(zip(each, sizes)):
        print(f"    file {index + 1}     {statistics.median(values):7.1f}           ({size / 1024:.1f} KiB)")
    print(f"  {len(sizes)} result files, {sum(sizes) / 1024:.0f} KiB per answer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
