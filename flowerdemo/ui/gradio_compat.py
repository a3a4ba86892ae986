"""Every place the app leans on Gradio internals or works around Gradio behaviour, in one module, so a Gradio
upgrade touches one file. Each entry says which Gradio version it was written against and why it exists."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

CSS = """
.fd-unlikely { opacity: 0.65; }
.fd-note { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
.fd-verdict h3 { margin-top: 0; }
/* Galleries grow with their content instead of reserving Gradio's 320-450 px minimum, leave room for their
   label (which otherwise covers the top of small thumbnails), and their columns may shrink below Gradio's
   100 px so a phone shows every thumbnail (3 per row there) without clipping. */
.fd-gallery .grid-wrap { min-height: 0; padding-top: calc(var(--size-2) + 2.25rem); }
.fd-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)); }
.fd-gallery .caption-label { white-space: normal; font-size: var(--text-xs); }
@media (max-width: 480px) {
  #fd-references .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)); }
}
"""


def cache_image(image, cache_dir: str | None = None) -> str:
    """Write an image into Gradio's cache, atomically, and return its path.

    Gradio 6.31 saves returned PIL images to a content-hashed path with a plain ``write_bytes``: two requests
    for the same photo rewrite the same file while a client may be downloading it, and that client gets a short
    read (seen once in 500 requests of benchmarks/load_test.py). A path already in the cache is served as is
    (and still swept by ``delete_cache``), so write it under a temporary name and rename it into place.
    """
    from gradio.utils import get_upload_folder

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    folder = Path(cache_dir or get_upload_folder()) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "gradcam.jpg"
    if target.exists():
        os.utime(target)  # delete_cache ages files by time: a re-used copy must not expire on its first schedule
    else:
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".gradcam.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(staging, target)
    return str(target)

def update_props(update: dict) -> dict:
    return {key: value for key, value in update.items() if key != "__type__"}


def parse_file_size(text: str) -> int:
    """Gradio's own parser for sizes like ``20mb`` (``gradio.utils._parse_file_size``, private in 6.31), so the
    app accepts exactly what ``launch(max_file_size=...)`` accepts."""
    from gradio.utils import _parse_file_size

    return _parse_file_size(text)
