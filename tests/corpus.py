"""A generated (never downloaded) corpus of hostile image inputs, each with the outcome it must have.

    from corpus import CASES, write_corpus
    cases = write_corpus(tmp_path)          # every case written as a file; Case.path is set
    CASES["bomb_png_30000x30000"].data      # or just the bytes, built on first use

``expected`` is ``"ok"`` (``load_image`` returns an upright RGB image) or ``"error"`` (it raises
``InvalidImageError``). Cases that need a closer look carry a ``check`` keyword the tests dispatch on.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
BOMB_SIDE = 30_000


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    expected: str  # "ok" or "error"
    build: Callable[[], bytes]
    check: str = ""  # extra assertion the tests run: "upright", "16bit", "white_background", "red", "first_frame"...
    path: Path | None = None

    @property
    def data(self) -> bytes:
        """The file's bytes, built once per process (the 24 MP photo takes a moment)."""
        if self.id not in _BUILT:
            _BUILT[self.id] = self.build()
        return _BUILT[self.id]


_BUILT: dict[str, bytes] = {}


# --- encoders -------------------------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients plus a little noise: compresses like a photo, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255 * x / max(width - 1, 1)
    green = 255 * y / max(height - 1, 1)
    blue = 128 + 100 * np.sin((x + y) / 40.0)
    array = np.stack([red, green, blue], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid PNG header claiming width x height RGB pixels, with one tiny IDAT: ~100 bytes on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def minimal_pdf() -> bytes:
    return (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
            b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
            b"trailer<</Root 1 0 R>>\n%%EOF\n")


def truncated_jpeg() -> bytes:
    data = encode(photo_like(320, 240, seed=1), "JPEG", quality=90)
    return data[: len(data) // 2]


def red_over_blue(width: int = 40, height: int = 60) -> Image.Image:
    """The upright picture of the EXIF cases: top half red, bottom half blue (portrait)."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width, height // 2))
    return image


def exif_rotated_jpeg(orientation: int) -> bytes:
    """Store red_over_blue() rotated, with the EXIF orientation tag that says how to turn it upright."""
    # exif_transpose applies ROTATE_270 for 6 and ROTATE_90 for 8; the stored pixels are the inverse turn.
    stored = red_over_blue().transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def gray16_ramp(width: int = 64, height: int = 32) -> Image.Image:
    """16-bit grey ramp from 10000 to 50000 (8-bit mean about 117 when scaled right; 255 if clipped)."""
    ramp = np.linspace(10_000, 50_000, width, dtype=np.float64)
    array = np.tile(ramp, (height, 1)).round().astype("<u2")
    return Image.frombytes("I;16", (width, height), array.tobytes())


def cmyk_red_jpeg() -> bytes:
    return encode(Image.new("CMYK", (48, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def palette_with_transparency() -> bytes:
    """Palette PNG: index 0 is *black* and fully transparent (left half), index 1 opaque red (right half)."""
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (20, 0, 40, 20))
    return encode(image, "PNG", transparency=0)


def half_transparent(mode: str) -> bytes:
    """RGBA or LA PNG: left half fully transparent black, right half opaque dark."""
    colour = (30, 30, 30) if mode == "RGBA" else (30,)
    image = Image.new(mode, (40, 20), (0,) * len(mode))
    image.paste(colour + (255,), (20, 0, 40, 20))
    return encode(image, "PNG")


def animated(fmt: str) -> bytes:
    """Three frames, red first: the loader must classify the first frame."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, GREEN, BLUE)]
    params = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)


def huge_photo() -> bytes:
    """6000 x 4000 (24 MP) JPEG: below the pixel limit, so it must be resized, not refused."""
    small = photo_like(600, 400, seed=2).resize((6000, 4000), Image.Resampling.BILINEAR)
    return encode(small, "JPEG", quality=85)


def _cases() -> list[Case]:
    return [
        Case("empty_file", "empty.jpg", "error", lambda: b""),
        Case("text_as_jpg", "notes.jpg", "error", lambda: b"Not an image, just some text.\n" * 20),
        Case("pdf_as_jpg", "document.jpg", "error", minimal_pdf),
        Case("truncated_jpeg", "truncated.jpg", "error", truncated_jpeg),
        Case("bomb_png_30000x30000", "bomb.png", "error", bomb_png, check="bomb"),
        Case("huge_jpeg_6000x4000", "huge.jpg", "ok", huge_photo, check="aspect_1.5"),
        Case("tiny_1x1", "one_pixel.png", "ok", lambda: encode(Image.new("RGB", (1, 1), RED), "PNG"), check="red"),
        Case("thin_10x4000", "thin.png", "ok", lambda: encode(photo_like(10, 4000), "PNG")),
        Case("strip_1x30000", "strip.png", "ok", lambda: encode(Image.new("L", (30_000, 1), 90), "PNG")),
        Case("gray16_png", "gray16.png", "ok", lambda: encode(gray16_ramp(), "PNG"), check="16bit"),
        Case("gray16_tiff", "gray16.tif", "ok", lambda: encode(gray16_ramp(), "TIFF"), check="16bit"),
        Case("cmyk_jpeg", "cmyk.jpg", "ok", cmyk_red_jpeg, check="red"),
        Case("palette_transparency_png", "palette.png", "ok", palette_with_transparency, check="white_left_red_right"),
        Case("animated_gif", "animated.gif", "ok", lambda: animated("GIF"), check="red"),
        Case("animated_webp", "animated.webp", "ok", lambda: animated("WEBP"), check="red"),
        Case("exif_orientation_6", "rotated6.jpg", "ok", lambda: exif_rotated_jpeg(6), check="upright"),
        Case("exif_orientation_8", "rotated8.jpg", "ok", lambda: exif_rotated_jpeg(8), check="upright"),
        Case("rgba_png", "rgba.png", "ok", lambda: half_transparent("RGBA"), check="white_left"),
        Case("la_png", "la.png", "ok", lambda: half_transparent("LA"), check="white_left"),
        Case("gray_l_png", "gray.png", "ok", lambda: encode(Image.new("L", (30, 20), 128), "PNG")),
        Case("bilevel_1_png", "bilevel.png", "ok", lambda: encode(Image.new("1", (30, 20), 1), "PNG")),
    ]


CASES: dict[str, Case] = {case.id: case for case in _cases()}
OK_IDS = [case_id for case_id, case in CASES.items() if case.expected == "ok"]
ERROR_IDS = [case_id for case_id, case in CASES.items() if case.expected == "error"]


def write_corpus(folder: str | Path, ids: list[str] | None = None) -> list[Case]:
    """Write the chosen cases (default: all) into ``folder``; return them with ``path`` set."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for case_id in ids or list(CASES):
        case = CASES[case_id]
        path = folder / case.filename
        path.write_bytes(case.data)
        written.append(replace(case, path=path))
    return written


if __name__ == "__main__":  # python tests/corpus.py OUT_DIR: look at the files by hand
    import sys

    for case in write_corpus(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus"):
        print(f"{case.expected:5s} {case.id:28s} {case.path} ({len(case.data):,} bytes)")
