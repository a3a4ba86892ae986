"""The feedback store: round trip through every reader, crash safety (interrupted steps and a real kill -9),
one record per photo, no EXIF out, quota and full disk, label sanitising, 16 concurrent writers, the summary,
and the upload scheduler up to the HTTP call."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import threading
import unicodedata
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flowerdemo import cli, feedback
from flowerdemo.core.verdict import Verdict
from flowerdemo.feedback import FeedbackError, FeedbackStore, LabelKind, read_records, sanitize_label, summary
from flowerdemo.serve.settings import ENV_FEEDBACK_DIR
from flowerdemo.training.field import FieldSample, read_feedback_samples

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("rose", "carnation", "sweet william", "daisy")
MODEL_SHA = "ab" * 32


def photo(index: int, size=(32, 24)) -> Image.Image:
    """A distinct photo per index (its pixels encode the index)."""
    rng = np.random.default_rng(index)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def save(store: FeedbackStore, image, label="rose", kind="known", top1="carnation", **extra):
    defaults = dict(top1=top1, verdict=Verdict.SPECIES, prediction_set=["carnation", "rose"], model_sha256=MODEL_SHA)
    return store.save(image, label, kind, **{**defaults, **extra})


def metadata_lines(store: FeedbackStore) -> list[dict]:
    path = store.folder / feedback.METADATA_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def visible_files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if not path.name.startswith(".")}


@pytest.fixture()
def store(tmp_path):
    return FeedbackStore(tmp_path / "fb", class_names=CLASSES)


# --- round trip -----------------------------------------------------------------------------------------------

def test_round_trip_through_read_records_the_trainer_and_datasets(store, tmp_path):
    known = save(store, photo(1), "Rose", "known", top1="carnation")
    other = save(store, photo(2), "  Blue   poppy ", "other", top1="daisy", prediction_set=[])
    not_flower = save(store, photo(3), "", "not_a_flower", top1="rose", verdict="not_a_flower", prediction_set=[])
    second_writer = FeedbackStore(store.root, class_names=CLASSES)  # another process / replica
    theirs = save(second_writer, photo(4), "daisy", "known", top1="daisy", prediction_set=[])

    assert (known.label, known.label_kind, known.replaced) == ("rose", "known", False)  # the list's spelling
    assert (other.label, not_flower.label) == ("Blue poppy", "not a flower")
    assert known.file_name == known.record_id + ".jpg" and len(known.record_id) == 64
    assert store.folder.parent == second_writer.folder.parent == store.root / "data"
    assert store.folder != second_writer.folder

    stored = metadata_lines(store)[0]
    assert set(stored) == {"file_name", "label", "label_kind", "model_top1", "verdict", "prediction_set",
                           "model_sha256", "time"}
    assert stored["time"].endswith("+00:00") and stored["model_sha256"] == MODEL_SHA
    assert stored["prediction_set"] == "carnation|rose"

    records = {record["record_id"]: record for record in read_records(store.root)}
    assert set(records) == {known.record_id, other.record_id, not_flower.record_id, theirs.record_id}
    assert records[known.record_id]["prediction_set"] == ["carnation", "rose"]
    assert records[theirs.record_id]["writer_id"] == second_writer.writer_id
    assert Image.open(records[known.record_id]["path"]).size == (32, 24)

    samples = {Path(sample.path).stem: sample for sample in read_feedback_samples(store.root)}
    assert samples[known.record_id] == FieldSample(records[known.record_id]["path"], "feedback", "known", "rose",
                                                   ("rose",))
    assert (samples[other.record_id].kind, samples[other.record_id].accept) == ("unknown", ())
    assert (samples[not_flower.record_id].kind, samples[not_flower.record_id].class_name) == \
        ("not_a_flower", "not a flower")

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(store.root), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == 4  # both writers' folders, though one has only empty prediction sets
    rows = {row["label"]: row for row in loaded}
    assert set(rows) == {"rose", "Blue poppy", "not a flower", "daisy"}
    assert rows["rose"]["image"].size == (32, 24) and rows["rose"]["model_top1"] == "carnation"
    assert rows["not a flower"]["label_kind"] == "not_a_flower"


def test_undo_removes_the_record_and_the_photo(store):
    kept = save(store, photo(1))
    undone = save(store, photo(2))
    assert store.undo(undone.record_id) is True
    assert store.undo(undone.record_id) is False
    assert store.undo("../" + kept.record_id) is False and store.undo(None) is False
    assert [record["record_id"] for record in read_records(store.root)] == [kept.record_id]
    assert visible_files(store.folder) == {kept.file_name, "metadata.jsonl"}
    assert store.undo(kept.record_id) is True
    assert visible_files(store.folder) == set()  # no empty metadata.jsonl: datasets cannot type one
    assert read_records(store.root) == []


def test_the_same_photo_twice_is_one_record_with_the_latest_label(store):
    first = save(store, photo(7), "rose")
    buffer = io.BytesIO()
    photo(7).save(buffer, format="PNG")  # other bytes, same pixels
    again = save(store, Image.open(buffer), "carnation", top1="rose")
    assert (first.replaced, again.replaced) == (False, True)
    assert first.record_id == again.record_id
    lines = metadata_lines(store)
    assert [(line["label"], line["model_top1"]) for line in lines] == [("carnation", "rose")]
    assert [record["label"] for record in read_records(store.root)] == ["carnation"]
    assert save(store, photo(8)).replaced is False and len(metadata_lines(store)) == 2


def test_readers_take_the_latest_label_across_writers(store):
    first = save(store, photo(5), "rose")
    later = save(FeedbackStore(store.root, class_names=CLASSES), photo(5), "daisy", top1="rose")
    assert first.record_id == later.record_id
    assert [record["label"] for record in read_records(store.root)] == ["daisy"]


# --- what is kept of a photo ----------------------------------------------------------------------------------

def jpeg_with_gps_and_trailer(size=(2400, 1800)) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPSInfo: Paris
    buffer = io.BytesIO()
    photo(11, size).save(buffer, format="JPEG", exif=exif, comment=b"secret comment")
    return buffer.getvalue() + b"TRAILING-SECRET-BYTES"


def test_exif_gps_comment_and_trailing_bytes_do_not_survive(store):
    data = jpeg_with_gps_and_trailer()
    original = Image.open(io.BytesIO(data))
    assert original.getexif().get_ifd(0x8825)  # the input really carries GPS
    assert original.info.get("comment") == b"secret comment"

    saved = save(store, original)
    stored_bytes = (store.folder / saved.file_name).read_bytes()
    stored = Image.open(io.BytesIO(stored_bytes))
    assert stored.format == "JPEG" and min(stored.size) == 1024 and stored.size == (1365, 1024)
    assert not stored.getexif() and "exif" not in stored.info and "comment" not in stored.info
    for secret in (b"Exif", b"PhoneMaker", b"secret comment", b"TRAILING-SECRET-BYTES"):
        assert secret not in stored_bytes
    assert stored_bytes.endswith(b"\xff\xd9")


def test_a_sideways_phone_photo_is_stored_upright(store):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    photo(12, (40, 20)).save(buffer, format="JPEG", exif=exif)
    saved = save(store, Image.open(buffer))
    assert Image.open(store.folder / saved.file_name).size == (20, 40)


def test_an_unreadable_photo_is_a_clear_error(store):
    with pytest.raises(FeedbackError, match="expected a photo"):
        save(store, b"not an image")
    whole = io.BytesIO()
    photo(13, (64, 64)).save(whole, format="JPEG")
    truncated = io.BytesIO(whole.getvalue()[:len(whole.getvalue()) // 2])  # the header is there, half the data
    with pytest.raises(FeedbackError, match="cannot be read"):
        save(store, Image.open(truncated))
    assert visible_files(store.folder) == set()


# --- crash safety ---------------------------------------------------------------------------------------------

class SimulatedCrash(BaseException):
    """Stands for the process dying: nothing after it runs (not even cleanup, see below)."""


def crash_at(monkeypatch, target: str):
    def crash(*args, **kwargs):
        raise SimulatedCrash(target)

    monkeypatch.setattr(target, crash)
    monkeypatch.setattr(feedback.store, "remove_quietly", lambda path: None)  # a dead process cleans nothing up


@pytest.mark.parametrize("step", ["flowerdemo.feedback.FeedbackStore._commit",  # photo written, not renamed
                                  "flowerdemo.feedback.FeedbackStore._write_metadata"])  # renamed, no record yet
def test_a_save_interrupted_between_photo_and_record_leaves_nothing_a_reader_sees(store, tmp_path, monkeypatch,
                                                                                    step):
    confirmed = save(store, photo(1))
    with monkeypatch.context() as patch:
        crash_at(patch, step)
        with pytest.raises(SimulatedCrash):
            save(store, photo(2), "daisy")
    leftovers = {path.name for path in store.folder.iterdir()} - {confirmed.file_name, "metadata.jsonl", ".lock"}
    assert leftovers  # the crash really left something behind: a .part file or a photo without its record
    assert [record["record_id"] for record in read_records(store.root)] == [confirmed.record_id]
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(store.root), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded["label"] == ["rose"]


def test_the_next_store_removes_what_a_crash_left(store, monkeypatch):
    confirmed = save(store, photo(1))
    with monkeypatch.context() as patch:
        crash_at(patch, "flowerdemo.feedback.FeedbackStore._write_metadata")
        with pytest.raises(SimulatedCrash):
            save(store, photo(2))
    with monkeypatch.context() as patch:
        crash_at(patch, "flowerdemo.feedback.FeedbackStore._commit")
        with pytest.raises(SimulatedCrash):
            save(store, photo(3))
    parts = [path for path in store.folder.iterdir() if path.name.endswith(feedback.PART_SUFFIX)]
    assert len(parts) == 1 and len(visible_files(store.folder)) == 3  # confirmed, orphan, metadata
    os.utime(parts[0], (0, 0))  # long past: no save in progress can own it

    assert FeedbackStore(store.root).clean() == 0  # opening it cleaned already: nothing left for a second pass
    assert {path.name for path in store.folder.iterdir()} == {confirmed.file_name, "metadata.jsonl", ".lock"}


def test_a_metadata_rewrite_cut_short_keeps_the_previous_file(store, monkeypatch):
    confirmed = save(store, photo(1))
    before = (store.folder / "metadata.jsonl").read_bytes()
    real_replace = os.replace

    def replace_photo_only(source, target):
        if Path(target).name == feedback.METADATA_FILE:
            raise SimulatedCrash("between the temporary metadata and its rename")
        real_replace(source, target)

    monkeypatch.setattr(feedback.store.os, "replace", replace_photo_only)
    monkeypatch.setattr(feedback.store, "remove_quietly", lambda path: None)
    with pytest.raises(SimulatedCrash):
        save(store, photo(2))
    assert (store.folder / "metadata.jsonl").read_bytes() == before
    assert [record["record_id"] for record in read_records(store.root)] == [confirmed.record_id]


def test_a_failed_folder_sync_after_the_commit_keeps_the_photo_its_record_names(store, monkeypatch):
    real_fsync_folder = feedback.store.fsync_folder

    def fail_once(folder):
        monkeypatch.setattr(feedback.store, "fsync_folder", real_fsync_folder)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(feedback.store, "fsync_folder", fail_once)
    with pytest.raises(FeedbackError, match="Input/output error"):
        save(store, photo(1))
    (line,) = metadata_lines(store)
    assert (store.folder / line["file_name"]).is_file() and len(read_records(store.root)) == 1


def test_a_failed_record_write_takes_its_photo_back(store, monkeypatch):
    confirmed = save(store, photo(1))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FeedbackStore, "_write_metadata", disk_full)
    with pytest.raises(FeedbackError, match="full"):
        save(store, photo(2))
    assert {path.name for path in store.folder.iterdir()} == {confirmed.file_name, "metadata.jsonl", ".lock"}


SAVE_LOOP = """
import sys
import numpy as np
from PIL import Image
sys.path.insert(0, {root!r})
from flowerdemo.feedback import FeedbackStore
store = FeedbackStore({folder!r})
rng = np.random.default_rng(0)
index = 0
while True:
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), "RGB")
    saved = store.save(image, f"species {{index}}", "other", top1="rose", verdict="species",
                       prediction_set=["rose"], model_sha256="ab" * 32)
    print(saved.record_id, flush=True)   # the loop's "saved" answer: only after save() returned
    index += 1
"""


@pytest.mark.slow
def test_kill_minus_9_mid_save_loses_no_confirmed_record(tmp_path):
    folder = tmp_path / "fb"
    code = SAVE_LOOP.format(root=str(ROOT), folder=str(folder))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    answered = []
    try:
        while len(answered) < 25:
            line = process.stdout.readline()
            assert line, process.stderr.read()[-2000:]
            answered.append(line.strip())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    answered += [line.strip() for line in process.stdout.read().splitlines() if line.strip()]
    assert process.returncode == -signal.SIGKILL

    records = read_records(folder)
    found = {record["record_id"] for record in records}
    assert set(answered) <= found  # every save that said "saved" is there
    assert len(found) <= len(answered) + 1  # and at most the one whose answer the kill cut off
    for record in records:
        with Image.open(record["path"]) as image:
            image.load()  # whole: a half-written photo would fail to decode
    (writer,) = feedback.writer_folders(folder)
    assert len(metadata_lines(SimpleNamespace(folder=writer))) == len(records)

    FeedbackStore(folder)  # the next process: removes a photo whose record the kill prevented
    photos = {path.stem for path in writer.glob("*.jpg")}
    assert photos == found


# --- concurrency ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_16_threads_saving_800_photos_lose_duplicate_and_interleave_nothing(store):
    threads, per_thread = 16, 50
    results: dict[str, tuple[str, str]] = {}
    errors = []
    start = threading.Barrier(threads)

    def client(number: int) -> None:
        start.wait()
        for step in range(per_thread):
            index = number * per_thread + step
            label = f"species {index}"
            try:
                saved = save(store, photo(index, (8, 8)), label, "other")
            except FeedbackError as error:
                errors.append(error)
                continue
            results[saved.record_id] = (saved.file_name, label)

    workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == [] and len(results) == threads * per_thread
    lines = metadata_lines(store)  # every line parses: none interleaved
    assert len(lines) == 800 and len({line["file_name"] for line in lines}) == 800
    assert {line["file_name"]: line["label"] for line in lines} == dict(results.values())
    assert len(list(store.folder.glob("*.jpg"))) == 800
    assert not [path for path in store.folder.iterdir() if path.name.endswith(feedback.PART_SUFFIX)]
    assert len(read_records(store.root)) == 800


# --- quota and full disk --------------------------------------------------------------------------------------

def test_a_folder_over_its_size_limit_refuses_with_a_clear_message(tmp_path):
    small = FeedbackStore(tmp_path / "fb", max_mb=0.05)  # 51 KB
    save(small, photo(1, (32, 32)), "x", "other")
    with pytest.raises(FeedbackError, match="full.*FLOWERDEMO_FEEDBACK_MAX_MB"):
        save(small, photo(2, (400, 400)), "x", "other")  # noise: far over 51 KB as a JPEG
    assert len(list(small.folder.glob("*.jpg"))) == 1 and len(read_records(small.root)) == 1
    with pytest.raises(FeedbackError, match="positive number"):
        FeedbackStore(tmp_path / "other", max_mb=0)


def test_a_full_disk_refuses_with_a_clear_message_and_keeps_nothing(store, monkeypatch):
    confirmed = save(store, photo(1))

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feedback.files.os, "fsync", no_space)
    with pytest.raises(FeedbackError, match="disk holding the feedback folder is full"):
        save(store, photo(2))
    monkeypatch.undo()
    assert {path.name for path in store.folder.iterdir()} == {confirmed.file_name, "metadata.jsonl", ".lock"}
    assert save(store, photo(2)).replaced is False  # and it works again once there is space


# --- labels ---------------------------------------------------------------------------------------------------

def test_label_kinds_and_known_names_are_checked(store):
    with pytest.raises(FeedbackError, match="known, other, not_a_flower"):
        save(store, photo(1), "rose", "species")
    with pytest.raises(FeedbackError, match="not one of the model's 4 species.*other"):
        save(store, photo(1), "tulip", "known")
    with pytest.raises(FeedbackError, match="empty"):
        save(store, photo(1), " \u200b\x00 ", "other")
    assert save(store, photo(1), "SWEET  William", "known").label == "sweet william"
    assert save(store, photo(1), "tulip", "other").replaced is True  # the refused saves kept nothing
    assert [line["label"] for line in metadata_lines(store)] == ["tulip"]
    any_name = FeedbackStore(store.root)  # without class names any known label is taken as given
    assert save(any_name, photo(2), "tulip", "known").label == "tulip"


def test_label_kinds_and_verdicts_are_stored_as_their_words(store):
    assert [kind.value for kind in LabelKind] == ["known", "other", "not_a_flower"]
    assert LabelKind.NOT_A_FLOWER.value == Verdict.NOT_A_FLOWER.value and feedback.LABEL_KINDS == tuple(LabelKind)
    saved = save(store, photo(1), "", LabelKind.NOT_A_FLOWER, verdict=Verdict.NOT_A_FLOWER, prediction_set=[])
    assert saved.label_kind is LabelKind.NOT_A_FLOWER and saved.label == "not a flower"
    line = metadata_lines(store)[0]
    assert (line["label_kind"], line["verdict"]) == ("not_a_flower", "not_a_flower")
    assert type(line["label_kind"]) is str and type(line["verdict"]) is str
    [record] = read_records(store.root)
    assert feedback.agrees(record) and feedback.model_answer(record) == "not a flower"
    assert feedback.model_answer({**record, "verdict": "no such verdict", "model_top1": "rose"}) == "rose"


def test_html_is_stored_as_the_literal_text(store):
    saved = save(store, photo(1), "<script>alert('x')</script> & <b>rose</b>", "other")
    assert saved.label == "<script>alert('x')</script> & <b>rose</b>"
    assert metadata_lines(store)[0]["label"] == saved.label


def test_sanitize_label_strips_controls_and_bidi_and_bounds_length():
    assert sanitize_label("  a\tb\n\nc  ") == "a b c"
    assert sanitize_label("ro\u202ese\u200f\x00\x1b[31m") == "rose[31m"
    assert sanitize_label("x" * 500) == "x" * 80
    assert sanitize_label("abc def", max_length=4) == "abc"  # no trailing space after the cut
    with pytest.raises(FeedbackError, match="text"):
        sanitize_label(None)


HOSTILE = st.lists(st.one_of(
    st.sampled_from(["../", "..\\", "/etc/passwd", "<script>alert(1)</script>", "\u202e", "\u200f", "\u2066",
                     "\x00", "\x1b[2J", "\r\n", "\ufeff", "rose", "\u0301", "\ud7ff", "x" * 300]),
    st.text(min_size=0, max_size=40)), min_size=0, max_size=12).map("".join)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=HOSTILE)
def test_200_hostile_labels_never_break_a_save_or_reach_a_path(store, text):
    clean = sanitize_label(text)
    assert len(clean) <= feedback.MAX_LABEL_LENGTH and clean == clean.strip()
    assert not any(unicodedata.category(char) in {"Cc", "Cf", "Cs"} for char in clean)
    assert sanitize_label(clean) == clean
    if not clean:
        with pytest.raises(FeedbackError, match="empty"):
            save(store, photo(1), text, "other")
        return
    saved = save(store, photo(1), text, "other")
    assert saved.label == clean and saved.file_name == saved.record_id + ".jpg"
    assert [line["label"] for line in metadata_lines(store)] == [clean]
    assert {path.name for path in store.root.rglob("*") if path.is_file() and not path.name.startswith(".")} == \
        {saved.file_name, "metadata.jsonl"}  # only ever the photo and the metadata, wherever the text points


# --- summary and the command line -----------------------------------------------------------------------------

def test_summary_counts_labels_and_the_most_corrected_pairs(store):
    for index in range(3):
        save(store, photo(index), "carnation", top1="sweet william")
    save(store, photo(10), "rose", top1="rose")
    save(store, photo(11), "rose", top1="carnation")
    save(store, photo(12), "", "not_a_flower", top1="daisy")
    save(store, photo(13), "", "not_a_flower", top1="daisy", verdict="not_a_flower")  # agreed: no flower
    save(store, photo(14), "Blue poppy", "other", top1="daisy", verdict="unknown_species")  # agreed: not one of its
    save(store, photo(15), "rose", top1="daisy", verdict="not_a_flower")
    text = summary(store.root)
    assert f"9 photo(s) labelled in {store.root}: 3 confirmed the model's answer, 6 corrected it" in text
    assert "By label:\n  carnation: 3\n  rose: 3\n  not a flower: 2\n  Blue poppy: 1\n" in text
    assert text.endswith("Most corrected (the model said -> people said):\n  sweet william -> carnation: 3\n"
                         "  carnation -> rose: 1\n  daisy -> not a flower: 1\n  not a flower -> rose: 1")
    assert summary(store.root, top=1).endswith("sweet william -> carnation: 3")
    assert summary(store.root.parent / "empty") == f"no feedback in {store.root.parent / 'empty'}"


def test_feedback_summary_command(store, capsys, monkeypatch):
    save(store, photo(1), "carnation", top1="sweet william")
    assert cli.main(["feedback", "summary", "--dir", str(store.root)]) == 0
    assert "sweet william -> carnation: 1" in capsys.readouterr().out
    monkeypatch.setenv(ENV_FEEDBACK_DIR, str(store.root))
    assert cli.main(["feedback", "summary"]) == 0
    assert "carnation: 1" in capsys.readouterr().out
    assert cli.main(["feedback", "summary", "--dir", str(store.root / "missing")]) == 2
    assert "no feedback folder" in capsys.readouterr().err


# --- configuration --------------------------------------------------------------------------------------------

def test_writer_ids_are_unique_and_never_a_split_name(tmp_path):
    assert FeedbackStore(tmp_path).writer_id != FeedbackStore(tmp_path).writer_id
    for bad in ("train", "../x", "A" * 65, "f" * 65, "abc\n"):
        with pytest.raises(FeedbackError, match="writer_id"):
            FeedbackStore(tmp_path, writer_id=bad)


# --- uploads --------------------------------------------------------------------------------------------------

class RecordingApi:
    """The HfApi calls the scheduler makes; run_as_future records the background push instead of running it."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return SimpleNamespace(repo_id=repo_id)

    def create_commit(self, **kwargs):
        self.calls.append(("create_commit", kwargs))
        return SimpleNamespace(oid="c" * 40)

    def run_as_future(self, function, *args, **kwargs):
        self.calls.append(("run_as_future", function))
        return Future()


@pytest.fixture()
def upload_env(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")  # huggingface_hub's variable: the store's settings are arguments


def uploading(store: FeedbackStore, **kwargs) -> FeedbackStore:
    """Another writer into the same folder, with uploads to the dataset repo set."""
    return FeedbackStore(store.root, class_names=CLASSES, repo_id="me/flower-feedback", **kwargs)


def committed(api: RecordingApi) -> dict:
    (call,) = [kwargs for name, *rest in api.calls if name == "create_commit" for kwargs in rest]
    api.calls.clear()
    return call


def test_start_uploads_wires_a_commit_scheduler_for_the_dataset_repo(store, upload_env, monkeypatch):
    api = RecordingApi()
    built = []
    real_class = feedback.feedback_scheduler_class()

    class Recorded(real_class):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(hf_api=api, **kwargs)

    monkeypatch.setattr(feedback.upload, "feedback_scheduler_class", lambda: Recorded)
    store = uploading(store, upload_every_minutes=2)
    store.start_uploads()
    store.start_uploads()  # once only
    scheduler = store._scheduler
    try:
        (kwargs,) = built
        assert kwargs["store"] is store
        assert {key: value for key, value in kwargs.items() if key != "store"} == {
            "repo_id": "me/flower-feedback", "repo_type": "dataset", "folder_path": store.root, "path_in_repo": "",
            "every": 2.0, "token": "hf_test", "private": True}
        assert api.calls[0] == ("create_repo", "me/flower-feedback",
                                {"private": True, "repo_type": "dataset", "exist_ok": True})
    finally:
        scheduler.stop()


def test_the_scheduler_uploads_locked_snapshots_and_deletes_undone_photos(store):
    api = RecordingApi()
    scheduler = feedback.feedback_scheduler_class()(store=store, repo_id="me/fb", repo_type="dataset",
                                                    folder_path=store.root, path_in_repo="", every=5, hf_api=api)
    try:
        first = save(store, photo(1))
        second = save(store, photo(2))
        (store.folder / f".{'0' * 64}.x{feedback.PART_SUFFIX}").write_bytes(b"half a photo")  # a save in flight
        api.calls.clear()
        scheduler.push_to_hub()
        commit = committed(api)
        prefix = f"data/{store.writer_id}/"
        added = {op.path_in_repo: op for op in commit["operations"]}
        assert set(added) == {prefix + "metadata.jsonl", prefix + first.file_name, prefix + second.file_name}
        assert commit["repo_type"] == "dataset" and commit["repo_id"] == "me/fb"
        metadata = added[prefix + "metadata.jsonl"].path_or_fileobj
        assert metadata == (store.folder / "metadata.jsonl").read_bytes()

        assert scheduler.push_to_hub() is None and api.calls == []  # nothing changed: no commit
        assert feedback.upload_snapshot(store, set(scheduler.uploaded))[prefix + first.file_name] is None  # not read

        third = save(store, photo(3))
        scheduler.push_to_hub()
        assert {op.path_in_repo for op in committed(api)["operations"]} == {prefix + "metadata.jsonl",
                                                                            prefix + third.file_name}

        store.undo(first.record_id)
        scheduler.push_to_hub()
        operations = committed(api)["operations"]
        assert {(type(op).__name__, op.path_in_repo) for op in operations} == {
            ("CommitOperationAdd", prefix + "metadata.jsonl"), ("CommitOperationDelete", prefix + first.file_name)}
    finally:
        scheduler.stop()


def test_uploads_without_a_token_or_a_reachable_hub_are_clear_errors(store, upload_env, monkeypatch):
    import huggingface_hub

    store = uploading(store)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(FeedbackError, match="HF_TOKEN"):
        store.start_uploads()

    # A closed loopback port: the real client runs up to create_repo's connection, which is refused at once.
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(FeedbackError, match="cannot upload feedback to the dataset repo me/flower-feedback.*"
                                            "kept in .* only"):
        store.start_uploads()
    assert store._scheduler is None


def test_on_a_space_without_a_repo_the_lost_folder_is_logged_once(store, monkeypatch, caplog):
    monkeypatch.setattr(feedback.upload, "_space_warning_logged", False)
    space = "me/flowers"  # Settings.space_id, from SPACE_ID
    with caplog.at_level("WARNING", logger="flowerdemo.feedback"):
        store.start_uploads(space_id=space)
        store.start_uploads(space_id=space)
        FeedbackStore(store.root).start_uploads(space_id=space)
        store.start_uploads()  # not on a Space: nothing to say
    warnings = [record.message for record in caplog.records if "lost when the Space restarts" in record.message]
    assert len(warnings) == 1 and feedback.REPO_SETTING in warnings[0]
    assert store._scheduler is None
    assert feedback.on_persistent_storage(Path("/data/feedback"))  # a Space's persistent storage: no warning there
    assert not feedback.on_persistent_storage(Path("/database/feedback"))
