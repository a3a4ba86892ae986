"""The corrections people give on the page ("Right" / "Not right: it is ..."), kept in a folder that loses nothing.

Layout (Hugging Face ``imagefolder``, which ``datasets.load_dataset("imagefolder", data_dir=ROOT)`` loads as is)::

    ROOT/data/<writer_id>/<sha256 of the pixels>.jpg
    ROOT/data/<writer_id>/metadata.jsonl     file_name, label, label_kind, model_top1, verdict,
                                             prediction_set ("|"-joined), model_sha256, time (UTC ISO 8601)

``writer_id`` is a fresh uuid per process, so several app processes or Space replicas never write the same files;
readers take every subfolder. ``datasets`` reads each ``metadata.jsonl`` with ``file_name`` relative to its own
folder and builds its rows from the metadata alone, so a photo without a record is never seen.

Why it never holds half a save:

1. the photo is re-encoded (JPEG, short side at most 1,024 px: no EXIF, no trailing bytes), written to a hidden
   ``.part`` name, flushed and fsynced;
2. under a lock (a threading lock for this process, ``flock`` on ``.lock`` for any other), the photo is renamed to
   its final name and ``metadata.jsonl`` is rewritten whole: to a hidden temporary file, fsynced, renamed over the
   old one, folder fsynced. A reader sees the old file or the new one, never a mix, and never a duplicate or an
   undone record (rewriting is cheap at these sizes: 10,000 records are about 3 MB).

A crash between 1 and 2 leaves a hidden ``.part`` file or a photo without a record; readers ignore both and the
next store opened on the folder removes them. The same photo (same pixels) saved again is one record with the
latest label. ``prediction_set`` is a ``|``-joined string, not a list, because Arrow types a file whose lists are
all empty as ``list<null>`` and ``datasets`` refuses metadata files whose types differ.

This module is app-side: Pillow and the standard library, ``huggingface_hub`` only for uploads.
"""
from __future__ import annotations

import collections
import errno
try:
    import fcntl  # POSIX: the lock between processes writing one folder
except ImportError:  # Windows: one process per folder; the threading lock still orders its saves
    fcntl = None
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

LABEL_KINDS = ("known", "other", "not_a_flower")
ENV_DIR, ENV_REPO, ENV_SWITCH, ENV_MAX_MB = (
    "FLOWERDEMO_FEEDBACK_DIR", "FLOWERDEMO_FEEDBACK_REPO", "FLOWERDEMO_FEEDBACK", "FLOWERDEMO_FEEDBACK_MAX_MB")
ENV_EVERY = "FLOWERDEMO_FEEDBACK_EVERY_MINUTES"
ENV_PER_MINUTE = "FLOWERDEMO_FEEDBACK_PER_MINUTE"
DEFAULT_PER_MINUTE = 10
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "feedback"
DEFAULT_MAX_MB = 500.0
DEFAULT_EVERY_MINUTES = 5.0
DATA_DIR = "data"
SPACE_PERSISTENT_DIR = Path("/data")
METADATA_FILE = "metadata.jsonl"
LOCK_FILE = ".lock"
PHOTO_SUFFIX = ".jpg"
PART_SUFFIX = ".part"
MAX_SHORT_SIDE = 1024
JPEG_QUALITY = 90
MAX_LABEL_LENGTH = 80
NOT_A_FLOWER_LABEL = "not a flower"
PREDICTION_SET_SEPARATOR = "|"
# A temporary file older than this cannot belong to a save in progress (a save takes seconds at most, even with
# 16 at once on a busy 2-core machine: benchmarks/bench_feedback_store.py).
STALE_PART_SECONDS = 600
_SWITCH_VALUES = {"on": True, "1": True, "true": True, "yes": True, "": True,
                  "off": False, "0": False, "false": False, "no": False}
# Control, format (bidi marks, zero-width), surrogate, private-use and unassigned characters.
_FORMAT_CHARS = {"Cf", "Cc", "Cs", "Co", "Cn"}
_WRITER_ID = re.compile(r"[0-9a-f-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_space_warning_logged = False


class FeedbackError(Exception):
    """A save or undo that could not be done; the message is fit to show the person who asked for it."""


class FeedbackDisabled(FeedbackError):
    """Feedback is switched off (``FLOWERDEMO_FEEDBACK=off``)."""


@dataclass(frozen=True)
class SavedRecord:
    record_id: str  # the photo's pixel SHA-256: what undo() takes
    file_name: str
    label: str
    label_kind: str
    replaced: bool  # the same photo had a record already; it now carries this label


# --- labels ---------------------------------------------------------------------------------------------------

def sanitize_label(text: str, max_length: int = MAX_LABEL_LENGTH) -> str:
    """Free text made safe to store: NFC, control/format characters (bidi overrides, zero-width) dropped, runs of
    whitespace made one space, at most ``max_length`` characters. HTML is kept as literal text (escaping is
    the page's job). The result is never used in a path (photos are named by their pixels' hash)."""
    if not isinstance(text, str):
        raise FeedbackError(f"a label must be text, got {type(text).__name__}")
    kept = "".join(" " if char.isspace() else char for char in text
                   if char.isspace() or unicodedata.category(char) not in _FORMAT_CHARS)
    # NFC after the filter: dropping a zero-width character can bring a letter and its accent together.
    return " ".join(unicodedata.normalize("NFC", kept).split())[:max_length].rstrip()


def check_label(label: str, label_kind: str, class_names: Sequence[str]) -> str:
    """The label to store for ``label_kind``, or a FeedbackError saying what is accepted."""
    if label_kind not in LABEL_KINDS:
        raise FeedbackError(f"label_kind must be one of {', '.join(LABEL_KINDS)}; got {label_kind!r}")
    clean = sanitize_label(label if label is not None else "")
    if label_kind == "not_a_flower":
        return clean or NOT_A_FLOWER_LABEL
    if not clean:
        raise FeedbackError("the name is empty: pick a species from the list, or type the name of another one")
    if label_kind == "known" and class_names:
        by_folded_name = {name.casefold(): name for name in class_names}
        if clean.casefold() not in by_folded_name:
            raise FeedbackError(f"{clean!r} is not one of the model's {len(class_names)} species; "
                                f"pick one from the list, or save it as another species (label_kind 'other')")
        clean = by_folded_name[clean.casefold()]
    return clean


# --- per-session rate ----------------------------------------------------------------------------------------

class SaveRateLimit:
    """At most ``per_minute`` saves in any 60 seconds, for one session (the page keeps one per visitor), so one
    script cannot fill the folder. ``clock`` is injectable for tests."""

    def __init__(self, per_minute: int | None = None, clock=time.monotonic):
        self.per_minute = int(per_minute if per_minute is not None else env_number(ENV_PER_MINUTE, DEFAULT_PER_MINUTE))
        if self.per_minute < 1:
            raise FeedbackError(f"the save limit must be at least 1 a minute; got {per_minute!r}")
        self.clock = clock
        self._times: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Count one save, or raise FeedbackError (and count nothing) when the session is over its limit."""
        with self._lock:
            now = self.clock()
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                wait = math.ceil(60.0 - (now - self._times[0]))
                raise FeedbackError(f"that is {self.per_minute} saves in a minute, the most one visitor can make; "
                                    f"try again in {wait} s")
            self._times.append(now)


# --- photos ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedPhoto:
    sha256: str  # of the decoded, upright RGB pixels (and their size), before resizing
    jpeg: bytes


def encode_photo(image: Image.Image) -> EncodedPhoto:
    """Upright RGB pixels re-encoded as a fresh JPEG: no EXIF (GPS), ICC, comment or trailing bytes survive."""
    if not isinstance(image, Image.Image):
        raise FeedbackError(f"expected a photo (PIL image), got {type(image).__name__}")
    try:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        pixels = rgb.tobytes()
    except (OSError, ValueError) as error:
        raise FeedbackError(f"this photo cannot be read for saving ({error})") from None
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + pixels).hexdigest()
    clean = Image.frombytes("RGB", rgb.size, pixels)  # a new image: carries none of the original's info
    short_side = min(clean.size)
    if short_side > MAX_SHORT_SIDE:
        scale = MAX_SHORT_SIDE / short_side
        size = (max(1, round(clean.width * scale)), max(1, round(clean.height * scale)))
        clean = clean.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    clean.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return EncodedPhoto(digest, buffer.getvalue())


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
    edit gone wrong) are logged and skipped: this store only ever renames whole files into place."""
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


# --- the store ------------------------------------------------------------------------------------------------

class FeedbackStore:
    """One process's writer into a feedback folder; thread-safe. Readers: :func:`read_records`, ``datasets``."""

    def __init__(self, root, max_mb: float = DEFAULT_MAX_MB, writer_id: str | None = None,
                 class_names: Sequence[str] = ()):
        if not isinstance(max_mb, (int, float)) or not max_mb > 0 or math.isinf(max_mb):
            raise FeedbackError(f"the feedback folder's size limit must be a positive number of MB; got {max_mb!r}")
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

    @classmethod
    def from_env(cls, class_names: Sequence[str] = (), app_dir=None) -> "FeedbackStore | None":
        """The store the environment asks for; None when ``FLOWERDEMO_FEEDBACK=off``."""
        switch = os.environ.get(ENV_SWITCH, "").strip().lower()
        if switch not in _SWITCH_VALUES:
            raise FeedbackError(f"{ENV_SWITCH} must be on or off; got {switch!r}")
        if not _SWITCH_VALUES[switch]:
            return None
        default = Path(app_dir) / "feedback" if app_dir is not None else DEFAULT_DIR
        root = os.environ.get(ENV_DIR, "").strip() or default
        return cls(root, max_mb=env_number(ENV_MAX_MB, DEFAULT_MAX_MB), class_names=class_names)

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

    def save(self, image: Image.Image, label: str, label_kind: str, *, top1: str, verdict: str,
             prediction_set: Sequence[str], model_sha256: str) -> SavedRecord:
        """Keep one photo and the name a person gave it; raises :class:`FeedbackError` (nothing kept) if it cannot."""
        label = check_label(label, label_kind, self.class_names)
        photo = encode_photo(image)
        record = {
            "file_name": photo.sha256 + PHOTO_SUFFIX,
            "label": label,
            "label_kind": label_kind,
            "model_top1": str(top1 or ""),
            "verdict": str(verdict or ""),
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
        return SavedRecord(photo.sha256, record["file_name"], label, label_kind, replaced)

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
                                f"{self.max_bytes / 2**20:.0f} MB limit, {ENV_MAX_MB}); nothing was saved")

    def start_uploads(self) -> None:
        """Upload the folder to ``FLOWERDEMO_FEEDBACK_REPO`` every few minutes (``CommitScheduler``); without a
        repo on a Space, say once that the folder goes when the Space restarts. Calling it again does nothing."""
        global _space_warning_logged
        repo_id = os.environ.get(ENV_REPO, "").strip()
        if not repo_id:
            if os.environ.get("SPACE_ID") and not on_persistent_storage(self.root) and not _space_warning_logged:
                _space_warning_logged = True
                logger.warning("feedback is kept in %s, which is lost when the Space restarts; set %s=owner/name "
                               "(and the HF_TOKEN secret) to upload it to a dataset repo", self.root, ENV_REPO)
            return
        if self._scheduler is None:
            self._scheduler = start_scheduler(self, repo_id)


def on_persistent_storage(path: Path) -> bool:
    """A Space's persistent storage is mounted at /data; everything else goes when it restarts."""
    return path == SPACE_PERSISTENT_DIR or SPACE_PERSISTENT_DIR in path.parents


def env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or math.isinf(value):
        raise FeedbackError(f"{name} must be a positive number; got {text!r}")
    return value


# --- uploads --------------------------------------------------------------------------------------------------

def start_scheduler(store: FeedbackStore, repo_id: str):
    """A :class:`FeedbackScheduler` for ``store``; FeedbackError without a token or a reachable Hub."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN", "").strip() or get_token()
    if not token:
        raise FeedbackError(f"{ENV_REPO}={repo_id} needs a Hugging Face token with write access: set HF_TOKEN "
                            "(a Space secret) or unset the repo to keep feedback locally")
    scheduler_class = feedback_scheduler_class()
    try:
        return scheduler_class(store=store, repo_id=repo_id, repo_type="dataset", folder_path=store.root,
                               path_in_repo="", every=env_number(ENV_EVERY, DEFAULT_EVERY_MINUTES), token=token,
                               private=True)
    except Exception as error:  # noqa: BLE001 -- any Hub failure: the app runs on and keeps feedback locally
        raise FeedbackError(f"cannot upload feedback to the dataset repo {repo_id} "
                            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                            f"it is kept in {store.root} only") from None


def feedback_scheduler_class():
    """``CommitScheduler`` that snapshots each writer folder under its lock (imported only when uploads are on)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, CommitScheduler

    class FeedbackScheduler(CommitScheduler):
        """Uploads what readers would see: each folder's ``metadata.jsonl`` and the photos it names, read under
        the folder's lock (the stock scheduler would upload ``.part`` files and could cut a metadata file that is
        renamed while it reads); photos that were uploaded and then undone are deleted from the repo."""

        def __init__(self, *, store: FeedbackStore, **kwargs):
            self.store = store
            self.uploaded: dict[str, bytes] = {}  # path in repo -> sha256 of what was uploaded
            super().__init__(**kwargs)

        def push_to_hub(self):
            with self.lock:
                snapshot = upload_snapshot(self.store, already_uploaded=set(self.uploaded))
            prefix = f"{self.path_in_repo.strip('/')}/" if self.path_in_repo else ""
            changed = {path: data for path, data in snapshot.items()
                       if data is not None and self.uploaded.get(path) != hashlib.sha256(data).digest()}
            gone = [path for path in self.uploaded if path not in snapshot]
            if not changed and not gone:
                return None
            operations = [CommitOperationAdd(path_in_repo=prefix + path, path_or_fileobj=data)
                          for path, data in changed.items()]
            operations += [CommitOperationDelete(path_in_repo=prefix + path) for path in gone]
            info = self.api.create_commit(repo_id=self.repo_id, repo_type=self.repo_type, operations=operations,
                                          commit_message=f"feedback: {len(changed)} file(s) added or changed, "
                                                         f"{len(gone)} removed", revision=self.revision)
            for path in gone:
                del self.uploaded[path]
            self.uploaded.update({path: hashlib.sha256(data).digest() for path, data in changed.items()})
            return info

    return FeedbackScheduler


def upload_snapshot(store: FeedbackStore, already_uploaded: set = frozenset()) -> dict[str, bytes | None]:
    """Every writer folder's ``metadata.jsonl`` and its photos, as bytes keyed by their path under the root,
    each folder read under its lock so a metadata file and its photos agree. A photo in ``already_uploaded``
    is None, not read again: its name is the hash of its pixels, so it cannot have changed."""
    snapshot: dict[str, bytes | None] = {}
    for folder in writer_folders(store.root):
        with store.locked() if folder == store.folder else folder_lock(folder):
            metadata = folder / METADATA_FILE
            if not metadata.is_file():
                continue
            relative = metadata.parent.relative_to(store.root).as_posix()
            snapshot[f"{relative}/{METADATA_FILE}"] = metadata.read_bytes()
            for record in read_metadata(metadata):
                photo, path_in_root = folder / record["file_name"], f"{relative}/{record['file_name']}"
                if photo.is_file():
                    snapshot[path_in_root] = None if path_in_root in already_uploaded else photo.read_bytes()
    return snapshot


# --- readers --------------------------------------------------------------------------------------------------

def read_records(root) -> list[dict]:
    """Every writer's confirmed records whose photo is there, the latest label per photo, oldest first. Each is
    the stored record plus ``path`` (the photo), ``record_id`` and ``writer_id``; ``prediction_set`` is a list."""
    latest: dict[str, dict] = {}
    for folder in writer_folders(root):
        for record in read_metadata(folder / METADATA_FILE):
            path = folder / record["file_name"]
            if Path(record["file_name"]).name != record["file_name"] or not path.is_file():
                continue
            record_id = Path(record["file_name"]).stem
            joined = record.get("prediction_set") or ""
            record = {**record, "path": str(path), "record_id": record_id, "writer_id": folder.name,
                      "prediction_set": [name for name in joined.split(PREDICTION_SET_SEPARATOR) if name]}
            if record_id not in latest or record.get("time", "") >= latest[record_id].get("time", ""):
                latest[record_id] = record
    return sorted(latest.values(), key=lambda record: (record.get("time", ""), record["record_id"]))


def model_answer(record: dict) -> str:
    """What the model told the person: its verdict when it said it is no flower or no species it knows."""
    verdict = record.get("verdict")
    if verdict == "not_a_flower":
        return NOT_A_FLOWER_LABEL
    if verdict == "unknown_species":
        return "unknown species"
    return record.get("model_top1") or "?"


def agrees(record: dict) -> bool:
    """The person confirmed the model: the same species, or the same "no flower" / "not one of mine" call."""
    answer = model_answer(record)
    if answer == NOT_A_FLOWER_LABEL:
        return record.get("label_kind") == "not_a_flower"
    if answer == "unknown species":
        return record.get("label_kind") == "other"
    return record.get("label_kind") == "known" and record["label"] == answer


def summary(root, top: int = 10) -> str:
    """Counts by label and the corrections people made most often (``model's answer -> their name: count``)."""
    records = read_records(root)
    if not records:
        return f"no feedback in {root}"
    confirmed = sum(agrees(record) for record in records)
    lines = [f"{len(records)} photo(s) labelled in {root}: {confirmed} confirmed the model's answer, "
             f"{len(records) - confirmed} corrected it", "", "By label:"]
    by_label = collections.Counter(record["label"] for record in records)
    lines += [f"  {label}: {count}" for label, count in sorted(by_label.items(), key=lambda item: (-item[1], item[0]))]
    pairs = collections.Counter((model_answer(record), record["label"]) for record in records if not agrees(record))
    if pairs:
        lines += ["", "Most corrected (the model said -> people said):"]
        ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
        lines += [f"  {said} -> {label}: {count}" for (said, label), count in ranked]
    return "\n".join(lines)
