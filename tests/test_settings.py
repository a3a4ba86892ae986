"""Settings: every FLOWERDEMO_* variable parsed once, from a given mapping (no global state), each bad value a
SettingsError naming the variable and what it takes."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from flowerdemo.serve import settings as settings_module
from flowerdemo.serve.settings import VARIABLES, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "0123456789abcdef" * 4


def test_nothing_set_is_every_default():
    parsed = Settings.from_env({})
    assert parsed == Settings()
    assert (parsed.model, parsed.model_revision, parsed.model_sha256) == (None, None, None)
    assert (parsed.concurrency, parsed.queue_size, parsed.max_file_size) == (2, 32, "20mb")
    assert parsed.feedback is True and parsed.feedback_dir == ROOT / "feedback"  # beside app.py
    assert (parsed.feedback_repo, parsed.feedback_max_mb, parsed.feedback_every_minutes,
            parsed.feedback_per_minute) == (None, 500.0, 5.0, 10)
    assert (parsed.space_id, parsed.omp_num_threads) == (None, None)
    # Empty or blank is unset, as it always was.
    assert Settings.from_env({name: "  " for name in VARIABLES.values()}) == Settings()


def test_every_field_has_its_variable():
    assert set(VARIABLES) == {field.name for field in dataclasses.fields(Settings)}
    assert all(name.startswith("FLOWERDEMO_") for field, name in VARIABLES.items()
               if field not in ("space_id", "omp_num_threads"))


EVERY_VARIABLE = {
    "FLOWERDEMO_MODEL": " hf://me/flowers@v2 ",
    "FLOWERDEMO_MODEL_REVISION": "v1",
    "FLOWERDEMO_MODEL_SHA256": DIGEST.upper(),
    "FLOWERDEMO_CONCURRENCY": "3",
    "FLOWERDEMO_QUEUE_SIZE": "64",
    "FLOWERDEMO_MAX_FILE_SIZE": "2 MB",
    "FLOWERDEMO_FEEDBACK": "Off",
    "FLOWERDEMO_FEEDBACK_DIR": "/srv/answers",
    "FLOWERDEMO_FEEDBACK_REPO": "me/flower-feedback",
    "FLOWERDEMO_FEEDBACK_MAX_MB": "2.5",
    "FLOWERDEMO_FEEDBACK_EVERY_MINUTES": "0.5",
    "FLOWERDEMO_FEEDBACK_PER_MINUTE": "4",
    "SPACE_ID": "me/flowers",
    "OMP_NUM_THREADS": "1",
}


def test_each_variable_is_parsed():
    parsed = Settings.from_env(EVERY_VARIABLE)
    assert parsed == Settings(model="hf://me/flowers@v2", model_revision="v1", model_sha256=DIGEST, concurrency=3,
                              queue_size=64, max_file_size="2mb", feedback=False,
                              feedback_dir=Path("/srv/answers"), feedback_repo="me/flower-feedback",
                              feedback_max_mb=2.5, feedback_every_minutes=0.5, feedback_per_minute=4,
                              space_id="me/flowers", omp_num_threads="1")
    assert set(EVERY_VARIABLE) == set(VARIABLES.values())  # none left out of this test


def test_from_env_reads_the_mapping_it_is_given_not_the_process(monkeypatch):
    monkeypatch.setenv("FLOWERDEMO_CONCURRENCY", "7")
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "maybe")  # would fail if it were read
    assert Settings.from_env({"FLOWERDEMO_CONCURRENCY": "3"}).concurrency == 3
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "off")
    assert Settings.from_env().concurrency == 7 and Settings.from_env().feedback is False  # default: os.environ


@pytest.mark.parametrize("value, expected", [(v, True) for v in ("on", "1", "true", "yes", "ON", " Yes ", "")]
                         + [(v, False) for v in ("off", "0", "false", "no", "OFF", "No")])
def test_the_feedback_switch_takes_one_table(value, expected):
    assert Settings.from_env({"FLOWERDEMO_FEEDBACK": value}).feedback is expected


@pytest.mark.parametrize("value, expected", [("5000000", 5_000_000), ("20mb", "20mb"), ("2 MB", "2mb"),
                                             ("1kb", "1kb"), ("3GB", "3gb"), ("10b", "10b")])
def test_upload_limits_are_bytes_or_gradios_sizes(value, expected):
    from flowerdemo.ui.gradio_compat import parse_file_size

    parsed = Settings.from_env({"FLOWERDEMO_MAX_FILE_SIZE": value}).max_file_size
    assert parsed == expected
    if isinstance(parsed, str):
        assert parse_file_size(parsed) > 0  # what launch(max_file_size=...) itself accepts


BAD = [
    ("FLOWERDEMO_FEEDBACK", "maybe", "must be on or off (one of on, off, 1, 0, true, false, yes, no); got 'maybe'"),
    ("FLOWERDEMO_CONCURRENCY", "two", "must be a whole number of at least 1; got 'two'"),
    ("FLOWERDEMO_CONCURRENCY", "0", "must be a whole number of at least 1; got '0'"),
    ("FLOWERDEMO_QUEUE_SIZE", "-5", "must be a whole number of at least 1; got '-5'"),
    ("FLOWERDEMO_FEEDBACK_PER_MINUTE", "lots", "must be a whole number of at least 1; got 'lots'"),
    ("FLOWERDEMO_FEEDBACK_PER_MINUTE", "2.5", "must be a whole number of at least 1; got '2.5'"),
    ("FLOWERDEMO_FEEDBACK_MAX_MB", "lots", "must be a positive number (like 5 or 2.5); got 'lots'"),
    ("FLOWERDEMO_FEEDBACK_MAX_MB", "0", "must be a positive number (like 5 or 2.5); got '0'"),
    ("FLOWERDEMO_FEEDBACK_EVERY_MINUTES", "inf", "must be a positive number (like 5 or 2.5); got 'inf'"),
    ("FLOWERDEMO_FEEDBACK_EVERY_MINUTES", "nan", "must be a positive number (like 5 or 2.5); got 'nan'"),
    ("FLOWERDEMO_MAX_FILE_SIZE", "lots", "must be bytes (like 20000000) or a number and one of the units "
                                         "b, kb, mb, gb, tb (like 20mb); got 'lots'"),
    ("FLOWERDEMO_MAX_FILE_SIZE", "2.5mb", "got '2.5mb'"),
    ("FLOWERDEMO_MAX_FILE_SIZE", "²", "got '²'"),
    ("FLOWERDEMO_MODEL_SHA256", "abc123", "must be 64 hex digits (what sha256sum prints); got 'abc123'"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_a_bad_value_names_the_variable_and_what_it_takes(name, value, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value).startswith(f"{name} ") and str(raised.value).endswith(message)
    assert isinstance(raised.value, ValueError)


def test_settings_are_frozen_and_take_a_folder_as_text():
    settings = Settings(feedback_dir="answers")
    assert settings.feedback_dir == Path("answers")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.concurrency = 3  # type: ignore[misc]


def test_the_feedback_defaults_are_the_stores_own():
    from flowerdemo import feedback

    assert settings_module.DEFAULT_FEEDBACK_MAX_MB == feedback.DEFAULT_MAX_MB
    assert settings_module.DEFAULT_FEEDBACK_EVERY_MINUTES == feedback.DEFAULT_EVERY_MINUTES
    assert (settings_module.ENV_FEEDBACK_MAX_MB, settings_module.ENV_FEEDBACK_REPO) == (
        feedback.MAX_MB_SETTING, feedback.REPO_SETTING)


def test_only_settings_reads_flowerdemo_variables():
    """Outside training/ (torchrun's and the Hub's variables), no module reads the environment but settings.py, and
    the Hub code only for huggingface_hub's own variables."""
    package = ROOT / "flowerdemo"
    found = [f"{path.relative_to(ROOT).as_posix()}:{line}" for path in sorted(package.rglob("*.py"))
             if "training" not in path.relative_to(package).parts
             for line in path.read_text(encoding="utf-8").splitlines() if "os.environ" in line]
    readers = {line.split(":", 1)[0] for line in found}
    assert readers <= {"flowerdemo/serve/settings.py", "flowerdemo/serve/hub.py", "flowerdemo/feedback/upload.py"}
    for line in found:
        if not line.startswith("flowerdemo/serve/settings.py"):
            assert "FLOWERDEMO" not in line and ("HF_HUB_OFFLINE" in line or "HF_TOKEN" in line), line
