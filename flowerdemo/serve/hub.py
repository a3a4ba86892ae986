"""Where a model comes from: the bundled ``weights/`` folder, a local file or folder, or a Hugging Face Hub repo.

Hub files go through ``huggingface_hub.hf_hub_download`` (its cache, revision pinning, ``HF_HUB_OFFLINE``).
Only the TorchScript ``model.pt`` is fetched: it carries its own metadata, and it is never unpickled.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.model_file import MODEL_FILE, ModelLoadError
from .settings import ENV_MODEL, ENV_MODEL_SHA256, Settings, SettingsError

BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[2] / "weights"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SOURCE_HELP = "a model.pt file, a model folder, hf://owner/repo[@revision] or owner/repo"


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "local" or "hub"
    location: str  # a path, or a Hub repo id
    revision: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hf://{self.location}@{self.revision or 'main'}"
        return self.location


def settings_from_env() -> Settings:
    """The environment's :class:`Settings`, for a caller that gave no model: a bad value is a ModelLoadError, what
    every model loader already reports."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise ModelLoadError(str(error)) from None


def parse_source(spec: str | os.PathLike | None = None, revision: str | None = None,
                 settings: Settings | None = None) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`: ``spec``, else ``settings.model`` (``FLOWERDEMO_MODEL``), else
    the bundled weights; ``revision``, else ``settings.model_revision``. Without ``settings``, the environment's
    are read, and only when ``spec`` or ``revision`` is missing (``FlowerClassifier.load()`` with no model)."""
    missing_spec = spec is None or str(spec).strip() == ""
    if missing_spec or not revision:
        settings = settings if settings is not None else settings_from_env()
        spec = (settings.model or str(BUNDLED_MODEL_DIR)) if missing_spec else spec
        revision = revision or settings.model_revision
    text = os.fspath(spec).strip()
    if text.startswith("hf://"):
        repo_id, _, pinned = text[len("hf://"):].partition("@")
        if not _REPO_ID.match(repo_id):
            raise ModelLoadError(f"{text!r} is not a Hub repo: use hf://owner/repo[@revision]")
        return ModelSource("hub", repo_id, pinned or revision)
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource("local", str(path))
    looks_like_file = text.endswith((".pt", ".pth", ".json")) or text.startswith((".", "/", "~"))
    if _REPO_ID.match(text) and not looks_like_file:
        return ModelSource("hub", text, revision)
    raise ModelLoadError(f"model {text!r} not found: give {_SOURCE_HELP}")


def resolve_model_file(source: ModelSource, expected_sha256: str | None = None,
                       settings: Settings | None = None) -> str:
    """A local path to the source's ``model.pt``, downloaded into the Hub cache if needed, checksum verified
    against ``expected_sha256``, else ``settings.model_sha256`` (``FLOWERDEMO_MODEL_SHA256``; without ``settings``,
    the environment's)."""
    if source.kind == "local":
        path = Path(source.location)
        path = path / MODEL_FILE if path.is_dir() else path
        if not path.is_file():
            raise ModelLoadError(f"{path} not found: a model folder must contain {MODEL_FILE}")
        local = str(path)
    else:
        local = _download(source)
    expected = (expected_sha256 or "").strip().lower()
    if not expected:
        settings = settings if settings is not None else settings_from_env()
        expected = settings.model_sha256 or ""
    if expected:
        verify_sha256(local, expected)
    return local


def _download(source: ModelSource) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it again so a late setting is honoured.
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    where = source.describe()
    try:
        return hf_hub_download(source.location, MODEL_FILE, revision=source.revision, local_files_only=offline,
                               library_name="flowerdemo")
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"{where}: {MODEL_FILE} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"(offline={offline}). Connect once, or point {ENV_MODEL} at a local model folder."
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{where}: no such revision (give a branch, tag or commit of the repo)") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{where}: no such model repo, or it is private (set HF_TOKEN)") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"{where}: the repo has no {MODEL_FILE}; publish it with flowerdemo.training.publish") from None
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(f"{where}: download failed ({type(error).__name__}: {str(error)[:200]})") from None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_sha256_digest(text: str) -> bool:
    """64 lowercase hex digits, the form ``sha256sum`` prints."""
    return re.fullmatch(r"[0-9a-f]{64}", text) is not None


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Refuse a model file whose bytes are not the ones the operator pinned, *before* loading it."""
    if not is_sha256_digest(expected):
        raise ModelLoadError(f"{ENV_MODEL_SHA256} must be 64 hex digits, got {expected!r}")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelLoadError(f"{path}: SHA-256 is {actual}, expected {expected}; refusing to load it")
