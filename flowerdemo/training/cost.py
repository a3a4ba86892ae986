"""What a scripted model costs to run and to ship: single-image latency of the whole network and of the ImageNet
view alone, and the ImageNet view's size (the exporter records it in the metrics; benchmarks/bench_model.py
re-measures on other machines)."""
from __future__ import annotations

import statistics
import time

import torch

from .scripting import IMAGENET_VIEW_DTYPE


def measure_cost(scripted: torch.jit.ScriptModule, crop: int, runs: int = 20) -> dict:
    """Single-image latency of the whole network and of the ImageNet view alone (medians, this machine)."""
    x = torch.randn(1, 3, crop, crop)

    def median_ms(call) -> float:
        with torch.inference_mode():
            for _ in range(3):
                call()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 1)

    def whole():
        features = scripted.features(x)
        scripted.head(features)
        scripted.imagenet_logits(x)

    parameters = sum(p.numel() for p in scripted.imagenet.parameters())
    return {"imagenet_view_parameters": int(parameters),
            "imagenet_view_megabytes": round(parameters * torch.finfo(IMAGENET_VIEW_DTYPE).bits / 8 / 1e6, 1),
            "forward_ms_median": median_ms(whole), "imagenet_view_ms_median": median_ms(lambda: scripted.imagenet_logits(x)),
            "threads": torch.get_num_threads(), "runs": runs}
