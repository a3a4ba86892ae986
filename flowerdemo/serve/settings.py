"""Every ``FLOWERDEMO_*`` environment variable, read in one place: :meth:`Settings.from_env` parses them all once,
into one frozen :class:`Settings`, and the app hands that object on as a plain argument (nothing else under
``flowerdemo`` reads these variables). A bad value is a :class:`SettingsError` naming the variable and what it
accepts, raised when the settings are read (the app reads them when it starts).

=================================  ========================  ==============================================
variable                           field                     value (default)
=================================  ========================  ==============================================
FLOWERDEMO_MODEL                   model                     model.pt, a model folder, hf://owner/repo[@rev]
                                                             or owner/repo (the bundled weights/)
FLOWERDEMO_MODEL_REVISION          model_revision            Hub branch, tag or commit (main)
FLOWERDEMO_MODEL_SHA256            model_sha256              64 hex digits the model file must hash to
FLOWERDEMO_CONCURRENCY             concurrency               requests run at once (2)
FLOWERDEMO_QUEUE_SIZE              queue_size                requests waiting at most (32)
FLOWERDEMO_MAX_FILE_SIZE           max_file_size             upload limit: bytes or like 20mb (20mb)
FLOWERDEMO_FEEDBACK                feedback                  the "Is this right?" row: on/off (on)
FLOWERDEMO_FEEDBACK_DIR            feedback_dir              where answers go (feedback/ beside app.py)
FLOWERDEMO_FEEDBACK_REPO           feedback_repo             dataset repo to upload them to (none)
FLOWERDEMO_FEEDBACK_MAX_MB         feedback_max_mb           the folder's size limit in MB (500)
FLOWERDEMO_FEEDBACK_EVERY_MINUTES  feedback_every_minutes    minutes between uploads (5)
FLOWERDEMO_FEEDBACK_PER_MINUTE     feedback_per_minute       saves one visitor may make a minute (10)
=================================  ========================  ==============================================

Two variables of other programs are read here too, so the app needs no other look at the environment:
``SPACE_ID`` (set on a Hugging Face Space) and ``OMP_NUM_THREADS`` (set: torch's thread count is left alone).
``HF_TOKEN`` and ``HF_HUB_OFFLINE`` stay with the code that hands them to ``huggingface_hub``.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_MODEL = "FLOWERDEMO_MODEL"
ENV_MODEL_REVISION = "FLOWERDEMO_MODEL_REVISION"
ENV_MODEL_SHA256 = "FLOWERDEMO_MODEL_SHA256"
ENV_CONCURRENCY = "FLOWERDEMO_CONCURRENCY"
ENV_QUEUE_SIZE = "FLOWERDEMO_QUEUE_SIZE"
ENV_MAX_FILE_SIZE = "FLOWERDEMO_MAX_FILE_SIZE"
ENV_FEEDBACK = "FLOWERDEMO_FEEDBACK"
ENV_FEEDBACK_DIR = "FLOWERDEMO_FEEDBACK_DIR"
ENV_FEEDBACK_REPO = "FLOWERDEMO_FEEDBACK_REPO"
ENV_FEEDBACK_MAX_MB = "FLOWERDEMO_FEEDBACK_MAX_MB"
ENV_FEEDBACK_EVERY_MINUTES = "FLOWERDEMO_FEEDBACK_EVERY_MINUTES"
ENV_FEEDBACK_PER_MINUTE = "FLOWERDEMO_FEEDBACK_PER_MINUTE"
ENV_SPACE_ID = "SPACE_ID"
ENV_OMP_NUM_THREADS = "OMP_NUM_THREADS"

APP_DIR = Path(__file__).resolve().parents[2]  # where app.py is (the repository root)
DEFAULT_FEEDBACK_DIR = APP_DIR / "feedback"
DEFAULT_CONCURRENCY = 2  # inference requests run at once; the Space / dev box has 2 CPU cores
DEFAULT_QUEUE_SIZE = 32
DEFAULT_MAX_FILE_SIZE = "20mb"
# The feedback store has these as its own defaults too, for a store opened by hand (flowerdemo.feedback may import
# only flowerdemo.core; tests/test_settings.py holds the two to the same values).
DEFAULT_FEEDBACK_MAX_MB = 500.0
DEFAULT_FEEDBACK_EVERY_MINUTES = 5.0
DEFAULT_FEEDBACK_PER_MINUTE = 10

ON_OFF = {"on": True, "off": False, "1": True, "0": False, "true": True, "false": False, "yes": True, "no": False}
FILE_SIZE_UNITS = ("b", "kb", "mb", "gb", "tb")  # what Gradio's launch(max_file_size=...) takes (gradio.utils.FileSize)
_FILE_SIZE = re.compile(rf"[0-9]+(?:{'|'.join(FILE_SIZE_UNITS)})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SettingsError(ValueError):
    """An environment variable with a value it does not take; the message names both and what is accepted."""


@dataclass(frozen=True)
class Settings:
    """What the environment asks of the app (see the module's table). Build one with :meth:`from_env`, or by
    hand (tests, embedding apps): the fields' defaults are the app's."""

    model: str | None = None  # None: the bundled weights/
    model_revision: str | None = None
    model_sha256: str | None = None  # lowercase
    concurrency: int = DEFAULT_CONCURRENCY
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE  # bytes, or Gradio's "<n><unit>" in lowercase
    feedback: bool = True
    feedback_dir: Path = DEFAULT_FEEDBACK_DIR
    feedback_repo: str | None = None
    feedback_max_mb: float = DEFAULT_FEEDBACK_MAX_MB
    feedback_every_minutes: float = DEFAULT_FEEDBACK_EVERY_MINUTES
    feedback_per_minute: int = DEFAULT_FEEDBACK_PER_MINUTE
    space_id: str | None = None  # SPACE_ID: running on a Hugging Face Space
    omp_num_threads: str | None = field(default=None, repr=False)  # OMP_NUM_THREADS, as set

    def __post_init__(self) -> None:
        object.__setattr__(self, "feedback_dir", Path(self.feedback_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Parse every variable in ``environ`` (the process environment unless given): unset or empty is the
        default; anything else must be a value the variable takes, or :class:`SettingsError`."""
        values = {}
        for name, (variable, parse) in READERS.items():
            text = (environ.get(variable) or "").strip()
            if text:  # unset or empty: the field's default, which is the app's
                values[name] = parse(variable, text)
        return cls(**values)


# Each parser takes the variable's name and its stripped, non-empty text.

def _text(name: str, text: str) -> str:
    return text


def _on_off(name: str, text: str) -> bool:
    try:
        return ON_OFF[text.lower()]
    except KeyError:
        raise SettingsError(f"{name} must be on or off (one of {', '.join(ON_OFF)}); got {text!r}") from None


def _whole_number(name: str, text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise SettingsError(f"{name} must be a whole number of at least {minimum}; got {text!r}")
    return value


def _positive_number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise SettingsError(f"{name} must be a positive number (like 5 or 2.5); got {text!r}")
    return value


def _file_size(name: str, text: str) -> str | int:
    compact = text.lower().replace(" ", "")
    if compact.isascii() and compact.isdigit():
        return int(compact)
    if _FILE_SIZE.fullmatch(compact):
        return compact
    raise SettingsError(f"{name} must be bytes (like 20000000) or a number and one of the units "
                        f"{', '.join(FILE_SIZE_UNITS)} (like 20mb); got {text!r}")


def _sha256(name: str, text: str) -> str:
    digest = text.lower()
    if not _SHA256.fullmatch(digest):
        raise SettingsError(f"{name} must be 64 hex digits (what sha256sum prints); got {text!r}")
    return digest


# field -> (the variable it is read from, how its text is parsed)
READERS = {
    "model": (ENV_MODEL, _text), "model_revision": (ENV_MODEL_REVISION, _text),
    "model_sha256": (ENV_MODEL_SHA256, _sha256), "concurrency": (ENV_CONCURRENCY, _whole_number),
    "queue_size": (ENV_QUEUE_SIZE, _whole_number), "max_file_size": (ENV_MAX_FILE_SIZE, _file_size),
    "feedback": (ENV_FEEDBACK, _on_off), "feedback_dir": (ENV_FEEDBACK_DIR, lambda name, text: Path(text)),
    "feedback_repo": (ENV_FEEDBACK_REPO, _text), "feedback_max_mb": (ENV_FEEDBACK_MAX_MB, _positive_number),
    "feedback_every_minutes": (ENV_FEEDBACK_EVERY_MINUTES, _positive_number),
    "feedback_per_minute": (ENV_FEEDBACK_PER_MINUTE, _whole_number), "space_id": (ENV_SPACE_ID, _text),
    "omp_num_threads": (ENV_OMP_NUM_THREADS, _text),
}
# field -> the variable it is read from
VARIABLES = {name: variable for name, (variable, _) in READERS.items()}
