"""The corrections people give on the page ("Right" / "Not right: it is ..."), kept in a folder that loses nothing.

Layout (Hugging Face ``imagefolder``, which ``datasets.load_dataset("imagefolder", data_dir=ROOT)`` loads as is)::

    ROOT/data/<writer_id>/<sha256 of the pixels>.jpg
    ROOT/data/<writer_id>/metadata.jsonl     file_name, label, label_kind, model_top1, verdict,
                                             prediction_set ("|"-joined), model_sha256, time (UTC ISO 8601)

``writer_id`` is a fresh uuid per process, so several app processes or Space replicas never write the same files;
readers take every subfolder. ``datasets`` reads each ``metadata.jsonl`` with ``file_name`` relative to its own
folder and builds its rows from the metadata alone, so a photo without a record is never seen.

- ``store``: :class:`FeedbackStore` (atomic saves under a lock, quota, undo; why it never holds half a save);
- ``files``: the layout's names, durable writes, the folder lock, the metadata file, crash cleanup;
- ``photos``: the re-encoding that drops EXIF and names a photo by its pixels;
- ``labels``: :class:`LabelKind` and label cleaning and checking;
- ``upload``: the ``CommitScheduler`` that uploads the folder to a dataset repo;
- ``read``: :func:`read_records` and :func:`summary`.

This package is app-side but knows nothing of the app: Pillow, the standard library, ``flowerdemo.core`` (the
verdict), ``huggingface_hub`` only for uploads. Its settings (folder, size limit, repo) are plain arguments; the
app reads them from the environment (``flowerdemo.serve.settings``).
"""
from .errors import FeedbackDisabled, FeedbackError
from .files import (DATA_DIR, LOCK_FILE, METADATA_FILE, PART_SUFFIX, PHOTO_SUFFIX, PREDICTION_SET_SEPARATOR,
                    STALE_PART_SECONDS, writer_folders)
from .labels import (LABEL_KINDS, MAX_LABEL_LENGTH, NOT_A_FLOWER_LABEL, LabelKind, as_label_kind, as_verdict,
                     check_label, sanitize_label)
from .photos import MAX_SHORT_SIDE, EncodedPhoto, encode_photo
from .read import agrees, model_answer, read_records, summary
from .store import DEFAULT_MAX_MB, MAX_MB_SETTING, FeedbackStore, SavedRecord
from .upload import (DEFAULT_EVERY_MINUTES, REPO_SETTING, feedback_scheduler_class, on_persistent_storage,
                     start_scheduler, upload_snapshot)

__all__ = [
    "DATA_DIR", "DEFAULT_EVERY_MINUTES", "DEFAULT_MAX_MB", "LABEL_KINDS", "LOCK_FILE", "MAX_LABEL_LENGTH",
    "MAX_MB_SETTING", "MAX_SHORT_SIDE", "METADATA_FILE", "NOT_A_FLOWER_LABEL", "PART_SUFFIX", "PHOTO_SUFFIX",
    "PREDICTION_SET_SEPARATOR", "REPO_SETTING", "STALE_PART_SECONDS", "EncodedPhoto", "FeedbackDisabled",
    "FeedbackError", "FeedbackStore", "LabelKind", "SavedRecord", "agrees", "as_label_kind", "as_verdict",
    "check_label", "encode_photo", "feedback_scheduler_class", "model_answer", "on_persistent_storage",
    "read_records", "sanitize_label", "start_scheduler", "summary", "upload_snapshot", "writer_folders",
]
