"""The folder's layout and the file operations that keep it whole: durable writes, renames made durable, the
lock between processes, the metadata file read and written whole, and the cleanup of what a crash left.

Layout (Hugging Face ``imagefolder``)::

    ROOT/data/<writer_id>/<sha256 of the pixels>.jpg
    ROOT/data/<writer_id>/metadata.jsonl
"""
from __future__ import annotations

import errno
try:
    import fcntl  # POSIX: the lock between processes writing one folder
except ImportError:  # Windows: one process per folder; the threading lock still orders its saves
    fcntl = None
import json
import logging
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

logger = logging.getLogger(__name__)

DATA_DIR = "data"
METADATA_FILE = "metadata.jsonl"
LOCK_FILE = ".lock"
PHOTO_SUFFIX = ".jpg"
PART_SUFFIX = ".part"
PREDICTION_SET_SEPARATOR = "|"
# A temporary file older than this cannot belong to a save in progress (a save takes seconds at most, even with
# 16 at once on a busy 2-core machine: benchmarks/bench_feedback_store.py).
STALE_PART_SECONDS = 600


# --- durable files --------------------------------------------------------------------------------------------

def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the name is in the folder, not in the file)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder/.lock``: held by one process (and one open file) at a time."""
    with open(folder / LOCK_FILE, "a+b") as handle:
        if fcntl is None:
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def folder_size(root: Path) -> int:
    """Bytes in every file under ``root``."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed by an undo or a cleanup while we walk
                pass
    return total


def describe_os_error(error: OSError, root: Path) -> str:
    """What a visitor is told: what happened, never the server's folder path (that goes to the server's log)."""
    logger.warning("feedback save in %s failed: %s", root, error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk holding the feedback folder is full, so nothing was saved"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the feedback folder cannot be written ({error.strerror}), so nothing was saved"
    return f"saving to the feedback folder failed ({error.strerror or error}), so nothing was saved"


# --- metadata -------------------------------------------------------------------------------------------------

def read_metadata(path: Path) -> list[dict]:
    """The records of one ``metadata.jsonl`` (none when it does not exist). Lines that are not a record (a hand
    edit gone wrong) are logged and skipped: the store only ever renames whole files into place."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("file_name"), str):
            records.append(record)
        else:
            logger.warning("%s line %d is not a feedback record; skipped", path, number)
    return records


def metadata_bytes(records: Sequence[dict]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


def utc_now() -> str:
    # Always with milliseconds: Arrow would type a bare "...:05Z" as a timestamp and the rest as text.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def writer_folders(root: str | Path) -> list[Path]:
    data = Path(root) / DATA_DIR
    if not data.is_dir():
        return []
    return sorted(path for path in data.iterdir() if path.is_dir() and not path.name.startswith("."))


def clean_folder(folder: Path, live_names: set[str]) -> int:
    """Remove what a crash left in ``folder``: photos without a record and stale ``.part`` files. Called under
    the folder's lock, so no save is between its rename and its record. The number of files removed."""
    removed = 0
    now = time.time()
    for path in folder.iterdir():
        try:
            orphan_photo = path.suffix == PHOTO_SUFFIX and path.name not in live_names
            stale_part = path.name.endswith(PART_SUFFIX) and now - path.stat().st_mtime > STALE_PART_SECONDS
        except FileNotFoundError:  # a live writer removed its own temporary file (it does so without the lock)
            continue
        if orphan_photo or stale_part:
            remove_quietly(path)
            removed += 1
    return removed
