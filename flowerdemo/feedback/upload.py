"""Uploads: the folder goes to a Hugging Face dataset repo every few minutes (``CommitScheduler``, imported only
when uploads are on), each writer folder snapshotted under its lock; photos uploaded and then undone are deleted
from the repo. Without a repo, on a Space, the folder is lost when the Space restarts: said once in the log."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .errors import FeedbackError
from .files import METADATA_FILE, folder_lock, read_metadata, writer_folders

logger = logging.getLogger(__name__)
# ``store`` below is a FeedbackStore, named in annotations only: store.py imports this module, and an import back
# would be a cycle.

# The app's settings of the same name and default (flowerdemo.serve.settings); the repo's name is what the log and
# errors point to, as what starts uploads.
DEFAULT_EVERY_MINUTES = 5.0
REPO_SETTING = "FLOWERDEMO_FEEDBACK_REPO"
SPACE_PERSISTENT_DIR = Path("/data")
_space_warning_logged = False


def on_persistent_storage(path: Path) -> bool:
    """A Space's persistent storage is mounted at /data; everything else goes when it restarts."""
    return path == SPACE_PERSISTENT_DIR or SPACE_PERSISTENT_DIR in path.parents


def warn_if_lost_on_restart(root: Path) -> None:
    """On a Space, without a repo: say once (per process) that a folder outside /data goes when it restarts."""
    global _space_warning_logged
    if on_persistent_storage(root) or _space_warning_logged:
        return
    _space_warning_logged = True
    logger.warning("feedback is kept in %s, which is lost when the Space restarts; set %s=owner/name "
                   "(and the HF_TOKEN secret) to upload it to a dataset repo", root, REPO_SETTING)


def start_scheduler(store: "FeedbackStore", repo_id: str, every_minutes: float = DEFAULT_EVERY_MINUTES):
    """A :class:`FeedbackScheduler` for ``store``; FeedbackError without a token or a reachable Hub."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN", "").strip() or get_token()  # huggingface_hub's own variable
    if not token:
        raise FeedbackError(f"{REPO_SETTING}={repo_id} needs a Hugging Face token with write access: set HF_TOKEN "
                            "(a Space secret) or unset the repo to keep feedback locally")
    scheduler_class = feedback_scheduler_class()
    try:
        return scheduler_class(store=store, repo_id=repo_id, repo_type="dataset", folder_path=store.root,
                               path_in_repo="", every=every_minutes, token=token, private=True)
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

        def __init__(self, *, store: "FeedbackStore", **kwargs):
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


def upload_snapshot(store: "FeedbackStore", already_uploaded: set = frozenset()) -> dict[str, bytes | None]:
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
