"""The store: one process's writer into a feedback folder. It never holds half a save:

1. the photo is re-encoded (:func:`encode_photo`: JPEG, short side at most 1,024 px, no EXIF, no trailing bytes),
   written to a hidden ``.part`` name, flushed and fsynced;
2. under a lock (a threading lock for this process, ``flock`` on ``.lock`` for any other), the photo is renamed to
   its final name and ``metadata.jsonl`` is rewritten whole: to a hidden temporary file, fsynced, renamed over the
   old one, folder fsynced. A reader sees the old file or the new one, never a mix, and never a duplicate or an
   undone record (rewriting is cheap at these sizes: 10,000 records are about 3 MB).

A crash between 1 and 2 leaves a hidden ``.part`` file or a photo without a record; readers ignore both and the
next store opened on the folder removes them. The same photo (same pixels) saved again is one record with the
latest label. ``prediction_set`` is a ``|``-joined string, not a list, because Arrow types a file whose lists are
all empty as ``list<null>`` and ``datasets`` refuses metadata files whose types differ.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from .errors import FeedbackError
from .files import (DATA_DIR, METADATA_FILE, PART_SUFFIX, PHOTO_SUFFIX, PREDICTION_SET_SEPARATOR, clean_folder,
                    describe_os_error, folder_lock, folder_size, fsync_folder, metadata_bytes, read_metadata,
                    remove_quietly, utc_now, write_durably, writer_folders)
from .labels import LabelKind, as_label_kind, check_label
from .photos import encode_photo
from .upload import DEFAULT_EVERY_MINUTES, start_scheduler, warn_if_lost_on_restart

logger = logging.getLogger(__name__)

# The app's setting of the same name and default (flowerdemo.serve.settings: the app reads the environment, not
# this package); named when the folder is full, as what raises the limit.
DEFAULT_MAX_MB = 500.0
MAX_MB_SETTING = "FLOWERDEMO_FEEDBACK_MAX_MB"
_WRITER_ID = re.compile(r"[0-9a-f-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SavedRecord:
    record_id: str  # the photo's pixel SHA-256: what undo() takes
    file_name: str
    label: str
    label_kind: LabelKind
    replaced: bool  # the same photo had a record already; it now carries this label


def _positive(value, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise FeedbackError(f"{message}; got {value!r}")
    return float(value)


class FeedbackStore:
    """One process's writer into a feedback folder; thread-safe. Readers: :func:`read_records`, ``datasets``.

    ``root``: the folder; ``max_mb``: the most it may hold; ``writer_id``: this writer's subfolder (a fresh uuid
    per process, so several app processes or Space replicas never write the same files); ``class_names``: the
    names a "known" label must be one of (none: any); ``repo_id`` and ``upload_every_minutes``: the Hugging Face
    dataset repo :meth:`start_uploads` uploads the folder to, and how often."""

    def __init__(self, root, max_mb: float = DEFAULT_MAX_MB, writer_id: str | None = None,
                 class_names: Sequence[str] = (), *, repo_id: str | None = None,
                 upload_every_minutes: float = DEFAULT_EVERY_MINUTES):
        max_mb = _positive(max_mb, "the feedback folder's size limit must be a positive number of MB")
        self.upload_every_minutes = _positive(upload_every_minutes,
                                              "the upload interval must be a positive number of minutes")
        self.repo_id = repo_id or None
        self.root = Path(root).expanduser().resolve()
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.writer_id = writer_id or uuid.uuid4().hex
        if not _WRITER_ID.fullmatch(self.writer_id):
            # Hex only: ``datasets`` takes a folder named like "train" or "test-1" for a split of its own.
            raise FeedbackError(f"writer_id must be 1-64 lowercase hex digits or dashes (a uuid); "
                                f"got {self.writer_id!r}")
        self.class_names = tuple(class_names)
        self.folder = self.root / DATA_DIR / self.writer_id
        self._lock = threading.Lock()
        self._scheduler = None
        self._cached_metadata: tuple = (None, [])  # (the file's identity, its records) as this store last saw it
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.clean()
        except OSError as error:
            raise FeedbackError(f"cannot use the feedback folder {self.root}: {error.strerror or error}") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock, folder_lock(self.folder):
            yield

    def clean(self) -> int:
        """Remove leftovers of crashed saves in every writer's folder (each under its own lock)."""
        removed = 0
        for folder in writer_folders(self.root):
            lock = self.locked() if folder == self.folder else folder_lock(folder)
            with lock:
                live = {record["file_name"] for record in read_metadata(folder / METADATA_FILE)}
                removed += clean_folder(folder, live)
        if removed:
            logger.info("feedback: removed %d leftover file(s) of interrupted saves under %s", removed, self.root)
        return removed

    def save(self, image: Image.Image, label: str, label_kind: LabelKind | str, *, top1: str, verdict,
             prediction_set: Sequence[str], model_sha256: str) -> SavedRecord:
        """Keep one photo and the name a person gave it; raises :class:`FeedbackError` (nothing kept) if it cannot.
        ``verdict`` is the model's (a ``Verdict``; stored as its word)."""
        kind = as_label_kind(label_kind)
        label = check_label(label, kind, self.class_names)
        photo = encode_photo(image)
        record = {
            "file_name": photo.sha256 + PHOTO_SUFFIX,
            "label": label,
            "label_kind": kind.value,
            "model_top1": str(top1 or ""),
            "verdict": str(verdict or ""),  # a Verdict writes its value
            "prediction_set": PREDICTION_SET_SEPARATOR.join(str(name) for name in prediction_set or ()),
            "model_sha256": str(model_sha256 or ""),
            "time": utc_now(),
        }
        self._check_quota(len(photo.jpeg))
        part = self.folder / f".{photo.sha256}.{uuid.uuid4().hex}{PART_SUFFIX}"
        try:
            write_durably(part, photo.jpeg)
            replaced = self._commit(part, record)
        except OSError as error:
            raise FeedbackError(describe_os_error(error, self.root)) from None
        finally:
            remove_quietly(part)  # gone already when the commit renamed it
        return SavedRecord(photo.sha256, record["file_name"], label, kind, replaced)

    def undo(self, record_id: str) -> bool:
        """Forget one record of this writer and delete its photo; False when there is no such record."""
        if not isinstance(record_id, str) or not _SHA256.fullmatch(record_id):
            return False  # not an id save() hands out
        file_name = f"{record_id}{PHOTO_SUFFIX}"
        try:
            with self.locked():
                records = self._read_metadata()
                kept = [record for record in records if record["file_name"] != file_name]
                if len(kept) == len(records):
                    return False
                self._write_metadata(kept)
                remove_quietly(self.folder / file_name)
                fsync_folder(self.folder)
        except OSError as error:
            raise FeedbackError(f"undoing failed ({error.strerror or error}); try again") from None
        return True

    def _commit(self, part: Path, record: dict) -> bool:
        """Rename the photo into place and rewrite the metadata with its record, as one step under the lock."""
        photo = self.folder / record["file_name"]
        with self.locked():
            records = self._read_metadata()
            kept = [old for old in records if old["file_name"] != record["file_name"]]
            replaced = len(kept) < len(records)
            before = self._metadata_identity()
            os.replace(part, photo)  # same pixels give the same bytes: replacing an old copy changes nothing
            try:
                self._write_metadata(kept + [record])
            except BaseException:
                # The metadata rename is the commit point: before it, a new photo must not stay without its record;
                # after it (only the folder's fsync failed), the record names the photo, so the photo stays.
                if not replaced and self._metadata_identity() == before:
                    remove_quietly(photo)
                raise
        return replaced

    def _metadata_identity(self):
        """Changes whenever the file is replaced (every write renames a new inode into place)."""
        try:
            stat = os.stat(self.folder / METADATA_FILE)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _read_metadata(self) -> list[dict]:
        """This writer's records, parsed again only when the file changed since this store last wrote or read it
        (called under the lock; parsing thousands of lines on every save would dominate it)."""
        identity = self._metadata_identity()
        if identity is None:
            return []
        if self._cached_metadata[0] != identity:
            self._cached_metadata = (identity, read_metadata(self.folder / METADATA_FILE))
        return list(self._cached_metadata[1])

    def _write_metadata(self, records: Sequence[dict]) -> None:
        """Swap in a new ``metadata.jsonl`` in one rename; an empty one is removed (``datasets`` cannot type it)."""
        metadata = self.folder / METADATA_FILE
        if records:
            temporary = self.folder / f".{METADATA_FILE}.{uuid.uuid4().hex}{PART_SUFFIX}"
            try:
                write_durably(temporary, metadata_bytes(records))
                os.replace(temporary, metadata)
            finally:
                remove_quietly(temporary)
        else:
            remove_quietly(metadata)
        fsync_folder(self.folder)
        self._cached_metadata = (self._metadata_identity(), list(records))

    def _check_quota(self, incoming: int) -> None:
        used = folder_size(self.root)
        if used + incoming > self.max_bytes:
            raise FeedbackError(f"the feedback folder is full ({used / 2**20:.0f} MB of its "
                                f"{self.max_bytes / 2**20:.0f} MB limit, {MAX_MB_SETTING}); nothing was saved")

    def start_uploads(self, space_id: str | None = None) -> None:
        """Upload the folder to :attr:`repo_id` every :attr:`upload_every_minutes` (``CommitScheduler``); without a
        repo on a Space (``space_id``, the Space this app runs on), say once that the folder goes when the Space
        restarts. Calling it again does nothing; FeedbackError when uploads cannot start."""
        if not self.repo_id:
            if space_id:
                warn_if_lost_on_restart(self.root)
            return
        if self._scheduler is None:
            self._scheduler = start_scheduler(self, self.repo_id, self.upload_every_minutes)
