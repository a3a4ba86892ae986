"""Files the page shows: the examples gallery and the per-class reference thumbnails."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..core.names import display_name
from ..core.verdict import Verdict

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES_DIR = ROOT / "examples"
REFERENCES_DIR = Path(__file__).resolve().parent.parent / "assets" / "references"
# examples/ names its non-flower photos not_a_flower_<what>.jpg: the page lists them last, captioned as such
NOT_A_FLOWER_EXAMPLE = Verdict.NOT_A_FLOWER.value


@functools.lru_cache(maxsize=None)
def reference_index(folder: str = str(REFERENCES_DIR)) -> dict:
    """class name -> thumbnail path, from ``index.json`` (written by scripts/make_reference_thumbnails.py)."""
    index_file = Path(folder) / "index.json"
    try:
        raw = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    index = {}
    for name, file in raw.items():
        path = Path(folder) / str(file)
        if path.is_file():
            index[name] = str(path)
    return index


def reference_items(names) -> list:
    """(thumbnail path, caption) for each class that has a bundled training-set photo; others are left out.
    ``names`` are the model's own (the index's keys); captions show their display names."""
    index = reference_index()
    return [(index[name], f"{rank}. {display_name(name)}") for rank, name in enumerate(names, 1) if name in index]


def static_url(path: str) -> str:
    """Where Gradio serves a file of a static path (``gr.set_static_paths``), relative to the page, so it also
    works behind a proxy prefix (a Space)."""
    return "gradio_api/file=" + str(Path(path).resolve())


def example_files(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """Flowers first (alphabetical), then the "not a flower" photos."""
    files = [p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    return sorted(files, key=lambda p: (p.stem.startswith(NOT_A_FLOWER_EXAMPLE), p.stem))
