"""The "Is this right?" row: its callbacks called directly against a real store in tmp_path, its wiring, and the
/feedback endpoint through a launched app (gradio_client, one session: /classify, then /feedback)."""
from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from flowerdemo import ui
from flowerdemo.core.verdict import Verdict
from flowerdemo.feedback import FeedbackDisabled, FeedbackStore, read_records
from flowerdemo.serve.hub import sha256_of
from flowerdemo.serve.settings import Settings, SettingsError
from flowerdemo.serve.predict import FlowerClassifier
from flowerdemo.ui import feedback as fb

from test_ui import EXAMPLE, ROOT, FakeClassifier


class Clock:
    """A hand-moved monotonic clock: the per-minute limit without waiting a minute."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def tiny_classifier(tiny_model_dir):
    return FlowerClassifier.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def model(tiny_classifier):
    return ui.LazyModel(lambda: tiny_classifier)


@pytest.fixture(scope="module")
def answer(model):
    """The tiny model's answer to the sunflower example: its ResultState."""
    return ui.make_classify(model)(str(EXAMPLE), 0.5)[-1]


@pytest.fixture
def store(tmp_path, tiny_classifier):
    return FeedbackStore(tmp_path / "feedback", class_names=tiny_classifier.class_names)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def events(model, store, clock):
    return fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=10, clock=clock)


def species_answer(answer, verdict=Verdict.SPECIES):
    """The same photo and answer, with the verdict the test needs (the tiny model's own is random)."""
    from dataclasses import replace

    return replace(answer, verdict=verdict, prediction_set=(answer.top1,) if verdict is Verdict.SPECIES else ())


def saved(status_update) -> bool:
    return "Thank you!" in status_update


# ---------------------------------------------------------------------------------------------------- saving


def test_right_keeps_the_photo_the_name_and_the_models_answer(events, answer, store, tiny_classifier):
    result = species_answer(answer)
    status, undo, session = events.right(result, None)
    assert saved(status) and undo["visible"] is True and session.record_id
    [record] = read_records(store.root)
    assert record["label"] == result.top1 and record["label_kind"] == "known"
    assert record["model_top1"] == result.top1 and record["verdict"] == "species"
    assert record["prediction_set"] == [result.top1]
    assert record["model_sha256"] == sha256_of(tiny_classifier.model_file)
    assert record["record_id"] == session.record_id
    with Image.open(record["path"]) as photo:
        assert photo.size == result.photo.size  # the classified photo itself, short side under 1,024 px
        difference = np.abs(np.asarray(photo, dtype=np.float64) - np.asarray(result.photo, dtype=np.float64))
        assert difference.mean() < 6  # re-encoded as JPEG, otherwise the same pixels


def test_right_on_a_plants_answer_keeps_the_photo_that_carried_it(events, model, store, tmp_path):
    from flowerdemo.ui.plant import make_classify_plant

    other = tmp_path / "the same plant, mirrored.jpg"
    with Image.open(EXAMPLE) as photo:
        photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("RGB").save(other)
    plant = make_classify_plant(model)([str(EXAMPLE), str(other)], 0.5)[-1]
    status, _, _ = events.right(species_answer(plant), None)
    assert saved(status)
    [record] = read_records(store.root)
    assert record["model_top1"] == plant.top1
    carrier = [c for c in plant.captions if "carried the answer" in c]
    assert len(carrier) == 1
    with Image.open(record["path"]) as kept:
        assert kept.size == plant.photo.size  # the carrier's whole photo, not a 224 px view


def test_right_on_a_rejected_photo_confirms_it_is_not_a_flower(events, answer, store):
    status, _, _ = events.right(species_answer(answer, Verdict.NOT_A_FLOWER), None)
    assert saved(status) and "not a flower" in status
    [record] = read_records(store.root)
    assert record["label_kind"] == "not_a_flower" and record["verdict"] == "not_a_flower"


def test_right_is_hidden_for_a_flower_it_does_not_know(events, answer, store):
    unknown = species_answer(answer, Verdict.UNKNOWN_SPECIES)
    row, right = events.for_answer(unknown, None)[:2]
    assert row["visible"] is True and right["visible"] is False
    status, _, _ = events.right(unknown, None)  # a stale click still saves nothing
    assert "Not saved" in status and read_records(store.root) == []


@pytest.mark.parametrize("choice, other, label, kind", [
    ("rose", None, "rose", "known"),
    (fb.NOT_A_FLOWER, None, "not a flower", "not_a_flower"),
    (fb.OTHER, "  garden   tulip ", "garden tulip", "other"),
])
def test_not_right_keeps_the_name_given(events, answer, store, choice, other, label, kind):
    status, undo, session = events.not_right(answer, None, choice, other)
    assert saved(status) and undo["visible"] is True
    [record] = read_records(store.root)
    assert (record["label"], record["label_kind"]) == (label, kind)
    assert record["model_top1"] == answer.top1  # the model's answer is kept beside the correction


def test_a_typed_name_is_shown_back_as_text(events, answer, store):
    name = '<img src=x onerror="alert(1)"> \u202etulip'
    status, _, _ = events.not_right(answer, None, fb.OTHER, name)
    assert "<img" not in status and "&lt;img src=x onerror=\"alert(1)\"&gt;" in status
    assert "<bdi>" in status  # its direction marks cannot reorder the sentence around it
    assert read_records(store.root)[0]["label"] == '<img src=x onerror="alert(1)"> tulip'  # stored as text


@pytest.mark.parametrize("choice, other, message", [
    (None, None, "Pick what it is first"),
    (fb.OTHER, "   ", "Type the species' name first"),
    ("no such species", None, "not one of the model's 3 species"),
])
def test_an_incomplete_correction_says_what_to_do_and_saves_nothing(events, answer, store, choice, other, message):
    status, undo, _ = events.not_right(answer, None, choice, other)
    assert status.startswith("<p class='fd-feedback-failed'><strong>Not saved.</strong>") and message in status
    assert undo == gr.update() and read_records(store.root) == []


def test_saving_the_same_photo_again_keeps_one_record_with_the_latest_name(events, answer, store):
    _, _, session = events.not_right(answer, None, "rose", None)
    status, _, session = events.not_right(answer, session, "sunflower", None)
    assert "replaces" in status
    assert [record["label"] for record in read_records(store.root)] == ["sunflower"]


def test_the_photo_saved_is_the_one_classified_even_when_the_upload_is_gone(events, model, tmp_path, store):
    upload = tmp_path / "upload.jpg"
    shutil.copy(EXAMPLE, upload)
    result = ui.make_classify(model)(str(upload), 0.5)[-1]
    upload.unlink()  # Gradio's cache sweep, or another photo in its place
    status, _, _ = events.not_right(result, None, "rose", None)
    assert saved(status) and len(read_records(store.root)) == 1


def test_nothing_to_save_without_an_answer(events, store):
    status, undo, session = events.right(None, None)
    assert "There is no answer to save" in status and read_records(store.root) == []
    assert isinstance(session, fb.FeedbackSession)


# ---------------------------------------------------------------------------------------------------- undo


def test_undo_removes_the_photo_and_its_record(events, answer, store):
    _, _, session = events.not_right(answer, None, "rose", None)
    path = read_records(store.root)[0]["path"]
    status, undo, session = events.undo(session)
    assert "Undone" in status and undo["visible"] is False and session.record_id is None
    assert read_records(store.root) == [] and not (store.folder / path.rsplit("/", 1)[1]).exists()
    status, _, _ = events.undo(session)  # a second click: nothing left to undo, and it says so
    assert "Nothing to undo" in status


def test_undo_only_reaches_the_save_of_the_answer_on_screen(events, answer, model, store):
    _, _, session = events.not_right(answer, None, "rose", None)
    other_photo = ui.make_classify(model)(str(ROOT / "examples" / "rose.jpg"), 0.5)[-1]
    session = events.for_answer(other_photo, session)[-1]  # a new answer: the row starts afresh
    status, _, _ = events.undo(session)
    assert "Nothing to undo" in status and len(read_records(store.root)) == 1


# ---------------------------------------------------------------------------------------------------- failures


def test_a_failed_save_says_so_and_the_row_stays_usable(model, answer, tmp_path, tiny_classifier, clock):
    full = FeedbackStore(tmp_path / "full", max_mb=0.000001, class_names=tiny_classifier.class_names)
    events = fb.FeedbackEvents(model, fb.LazyStore.of(model, full), per_minute=10, clock=clock)
    status, undo, session = events.not_right(answer, None, "rose", None)
    assert "Not saved." in status and "full" in status and undo == gr.update()
    assert read_records(full.root) == []
    assert events.for_answer(answer, session)[0]["visible"] is True  # the row is still there for another try


def test_a_store_that_cannot_be_opened_is_reported_on_each_save_not_cached(model, answer, tmp_path, clock):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    attempts = []

    def opener(classifier):
        attempts.append(1)
        return FeedbackStore(blocker, class_names=classifier.class_names)

    events = fb.FeedbackEvents(model, fb.LazyStore(model, opener), per_minute=10, clock=clock)
    for _ in range(2):
        status, _, _ = events.not_right(answer, None, "rose", None)
        assert "Not saved." in status and "Cannot use the feedback folder" in status
    assert len(attempts) == 2


def test_a_model_that_cannot_be_loaded_is_a_message_not_a_crash(answer, store, clock):
    from flowerdemo.core.artifact import ModelLoadError

    def broken():
        raise ModelLoadError("model file not found: /nowhere/model.pt")

    model = ui.LazyModel(broken)
    events = fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=10, clock=clock)
    status, _, _ = events.not_right(answer, None, "rose", None)
    assert "Not saved." in status and "could not be loaded" in status


def test_saves_a_minute_are_limited_per_session(events, model, answer, clock, store):
    events = fb.FeedbackEvents(model, events.store, per_minute=2, clock=clock)
    session = None
    for name in ("rose", "sunflower"):
        status, _, session = events.not_right(answer, session, name, None)
        assert saved(status)
    clock.now += 30
    status, _, session = events.not_right(answer, session, "pink primrose", None)
    assert "Not saved." in status and "2 saves in a minute" in status and "try again in 30 s" in status
    assert read_records(store.root)[0]["label"] == "sunflower"
    other_visitor = events.not_right(answer, None, "pink primrose", None)[0]  # a session of its own
    assert saved(other_visitor)
    clock.now += 31  # the first save is now over a minute old
    assert saved(events.not_right(answer, session, "rose", None)[0])


def test_the_limit_comes_from_the_environment(model, store, monkeypatch):
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_PER_MINUTE", "3")
    per_minute = Settings.from_env().feedback_per_minute
    assert fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=per_minute).per_minute == 3
    assert fb.FeedbackEvents(model, fb.LazyStore.of(model, store)).per_minute == 10  # the default
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_PER_MINUTE", "lots")
    with pytest.raises(SettingsError, match="FLOWERDEMO_FEEDBACK_PER_MINUTE"):
        fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=Settings.from_env().feedback_per_minute)
    with pytest.raises(SettingsError, match="FLOWERDEMO_FEEDBACK_PER_MINUTE"):  # the page is never built
        ui.build_demo(lambda: None, feedback_store=store)
    with pytest.raises(fb.FeedbackError, match="at least 1"):
        fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=0)


def test_a_session_gets_a_limited_number_of_saves_a_minute():
    now = [0.0]
    limit = fb.SaveRateLimit(3, clock=lambda: now[0])
    for second in (0.0, 10.0, 20.0):
        now[0] = second
        limit.take()
    now[0] = 59.0
    with pytest.raises(fb.FeedbackError, match="3 saves in a minute.*try again in 1 s"):
        limit.take()
    now[0] = 60.0  # the first save is a minute old
    limit.take()
    with pytest.raises(fb.FeedbackError, match="at least 1"):
        fb.SaveRateLimit(0)


# ---------------------------------------------------------------------------------------------------- the row


def test_no_row_without_an_answer_and_a_fresh_row_for_each_answer(events, answer):
    row, right, choice, other, not_right, status, undo, session = events.for_answer(None, None)
    assert row["visible"] is False  # a cleared, unreadable or empty answer: no buttons
    _, _, session = events.not_right(answer, session, "rose", None)
    row, right, choice, other, not_right, status, undo, fresh = events.for_answer(species_answer(answer), session)
    assert row["visible"] is True and right["value"] == f"Right: it is {answer.top1}"
    assert choice["value"] is None and other["visible"] is False and not_right["interactive"] is False
    assert status == "" and undo["visible"] is False  # no stale thank-you beside a new answer
    assert fresh.record_id is None and fresh.limit is session.limit  # the limit carries over


def test_a_bad_upload_hides_the_row(events, model, tmp_path):
    bad = tmp_path / "upload.jpg"
    bad.write_bytes(b"this is not an image")
    state = ui.make_auto_classify(ui.make_classify(model))(str(bad), 0.5)[-1]
    assert state is None and events.for_answer(state, None)[0]["visible"] is False


def test_the_choice_names_the_button_and_opens_the_name_box(events):
    other, button = events.choice_changed("rose")
    assert other["visible"] is False and button == {"__type__": "update", "value": "Not right: it is rose",
                                                    "interactive": True}
    other, button = events.choice_changed(fb.OTHER)
    assert other["visible"] is True and button["value"] == "Not right: it is another species"
    assert events.choice_changed(None)[1]["interactive"] is False


def test_the_choices_are_the_models_species_searchable_plus_other_and_not_a_flower(events, tiny_classifier):
    choices = events.choices()["choices"]
    assert choices[:2] == [fb.OTHER_CHOICE, fb.NOT_A_FLOWER_CHOICE]
    assert [value for _, value in choices[2:]] == sorted(tiny_classifier.class_names)


def test_the_consent_line_says_what_is_kept_and_where(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOWERDEMO_FEEDBACK_REPO", raising=False)
    monkeypatch.delenv("FLOWERDEMO_FEEDBACK_DIR", raising=False)
    text = fb.consent_markdown(fb.destination(Settings.from_env()))
    for kept in ("the photo", "the name you give", "answer and verdict", "SHA-256", "the time", "no IP address",
                 "no account", "EXIF", "Nothing is kept unless you click"):
        assert kept in text
    assert "folder `feedback` on this server" in text and "Hugging Face" not in text
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_DIR", str(tmp_path / "answers"))
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_REPO", "someone/flower-corrections")
    text = fb.consent_markdown(fb.destination(Settings.from_env()))
    assert str(tmp_path / "answers") in text and "Hugging Face dataset `someone/flower-corrections`" in text


def test_the_store_the_settings_ask_for(tmp_path, monkeypatch):
    """What was FeedbackStore.from_env: folder, size limit and switch come from Settings (read from the environment
    once), and the page opens its store with them."""
    for name in ("FLOWERDEMO_FEEDBACK", "FLOWERDEMO_FEEDBACK_DIR", "FLOWERDEMO_FEEDBACK_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env().feedback_dir == ROOT / "feedback"  # beside app.py
    classes = ("rose", "daisy")
    default = fb.open_store(Settings(feedback_dir=tmp_path / "feedback"), classes)
    assert default.root == (tmp_path / "feedback").resolve() and default.class_names == classes
    assert default.max_bytes == 500 * 2**20
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_MAX_MB", "2.5")
    configured = fb.open_store(Settings.from_env())
    assert configured.root == (tmp_path / "elsewhere").resolve() and configured.max_bytes == int(2.5 * 2**20)
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK_MAX_MB", "lots")
    with pytest.raises(SettingsError, match="FLOWERDEMO_FEEDBACK_MAX_MB must be a positive number"):
        Settings.from_env()
    monkeypatch.delenv("FLOWERDEMO_FEEDBACK_MAX_MB")
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "OFF")
    with pytest.raises(FeedbackDisabled, match="switched off"):
        fb.open_store(Settings.from_env())
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "maybe")
    with pytest.raises(SettingsError, match="on or off"):
        Settings.from_env()


def test_the_opener_starts_uploads_with_the_settings_repo(tmp_path, tiny_classifier, monkeypatch):
    started = []
    monkeypatch.setattr(FeedbackStore, "start_uploads", lambda self, space_id=None: started.append(
        (self.repo_id, self.upload_every_minutes, space_id)))
    settings = Settings(feedback_dir=tmp_path / "fb", feedback_repo="me/fb", feedback_every_minutes=2.0,
                        space_id="me/flowers")
    store = fb.store_opener(settings)(tiny_classifier)
    assert store.class_names == tiny_classifier.class_names and started == [("me/fb", 2.0, "me/flowers")]


# ---------------------------------------------------------------------------------------------------- the page


def test_the_row_and_its_endpoint_are_on_the_page(tiny_classifier, store):
    demo = ui.build_demo(lambda: tiny_classifier, feedback_store=store)
    endpoints = demo.get_api_info()["named_endpoints"]
    assert list(endpoints) == ["/classify", "/classify_plant", "/feedback"]
    assert [p["parameter_name"] for p in endpoints["/feedback"]["parameters"]] == ["label", "label_kind"]
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"fd-feedback", "fd-fb-right", "fd-fb-choice", "fd-fb-not-right", "fd-fb-undo", "fd-fb-status"} <= ids
    dropdown = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "fd-fb-choice")
    assert dropdown.filterable is True
    # Saving is its own event, in its own concurrency group: never on /classify's path, never behind inference.
    for name in ("classify", "classify_plant"):
        classify = next(fn for fn in demo.fns.values() if fn.api_name == name)
        assert all(block.elem_id not in ("fd-feedback", "fd-fb-status") for block in classify.outputs)
    saves = [fn for fn in demo.fns.values() if fn.fn is not None and getattr(fn.fn, "__name__", "") in
             ("right", "not_right", "api_save", "undo")]
    assert len(saves) == 4 and {fn.concurrency_id for fn in saves} == {"feedback"}


@pytest.mark.parametrize("switch", ["off", "OFF", "0", "no"])
def test_switched_off_there_is_no_row_and_no_endpoint(tiny_classifier, monkeypatch, switch):
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", switch)
    demo = ui.build_demo(lambda: tiny_classifier)
    assert list(demo.get_api_info()["named_endpoints"]) == ["/classify", "/classify_plant"]
    assert "fd-feedback" not in {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert demo.flowerdemo_feedback is None


def test_the_page_takes_its_settings_as_an_argument(tiny_classifier, monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "maybe")  # never read: the settings are given
    off = ui.build_demo(lambda: tiny_classifier, settings=Settings(feedback=False))
    assert list(off.get_api_info()["named_endpoints"]) == ["/classify", "/classify_plant"]
    assert off.flowerdemo_feedback is None
    on = ui.build_demo(lambda: tiny_classifier, settings=Settings(feedback_dir=tmp_path / "answers",
                                                                  feedback_repo="me/fb"))
    consent = next(block for block in on.blocks.values() if getattr(block, "elem_id", None) == "fd-fb-consent")
    assert str(tmp_path / "answers") in consent.value and "dataset `me/fb`" in consent.value
    assert not (tmp_path / "answers").exists()  # opened after the model, on first use


def test_a_bad_switch_value_stops_the_app_at_start(tiny_classifier, monkeypatch):
    monkeypatch.setenv("FLOWERDEMO_FEEDBACK", "maybe")
    with pytest.raises(ValueError, match="FLOWERDEMO_FEEDBACK must be on or off"):
        ui.build_demo(lambda: tiny_classifier)


def test_the_model_file_is_hashed_once(tiny_model_dir, monkeypatch):
    from flowerdemo.serve import hub

    classifier = FlowerClassifier.load(str(tiny_model_dir))
    calls = []
    real = hub.sha256_of
    monkeypatch.setattr(hub, "sha256_of", lambda path: calls.append(path) or real(path))
    digest = ui.runtime.model_sha256(classifier)
    assert digest == hashlib.sha256((tiny_model_dir / "model.pt").read_bytes()).hexdigest()
    assert ui.runtime.model_sha256(classifier) == digest and len(calls) == 1
    assert f"SHA-256 `{digest[:12]}…`" in ui.model_markdown(classifier) and len(calls) == 1
    assert ui.runtime.model_sha256(FakeClassifier("species")) is None  # no file: nothing to hash


def test_the_api_endpoint_refuses_clearly(events, answer):
    with pytest.raises(gr.Error, match="label_kind must be one of known, other, not_a_flower"):
        events.api_save(answer, None, "rose", "sure")
    with pytest.raises(gr.Error, match="no answer to save"):
        events.api_save(None, None, "rose", "known")
    record, session = events.api_save(answer, None, "rose", "known")
    assert record["saved"] is True and record["label"] == "rose" and session.record_id == record["record_id"]


def test_a_client_classifies_then_saves_in_one_session(tiny_classifier, store):
    """Through the launched app: /classify, then /feedback with the same client (the answer is in its session)."""
    from gradio_client import Client, handle_file

    demo = ui.build_demo(lambda: tiny_classifier, feedback_store=store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **ui.launch_kwargs())
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        with pytest.raises(Exception, match="no answer to save"):  # nothing classified in this session yet
            client.predict("rose", "known", api_name="/feedback")
        client.predict(handle_file(str(EXAMPLE)), 0.5, api_name="/classify")
        record = client.predict("not a flower", "not_a_flower", api_name="/feedback")
        assert record["saved"] is True and record["label_kind"] == "not_a_flower"
        client.close()
    finally:
        demo.close()
    [stored] = read_records(store.root)
    assert stored["record_id"] == record["record_id"] and stored["model_top1"] in tiny_classifier.class_names


def test_random_names_never_break_a_save_or_the_page(model, answer, store, clock):
    """200 random typed names (long, control characters, ../, <script>, right-to-left marks): each save is
    either kept or refused with a message, and the page never shows the name's markup as markup."""
    import html
    import random

    rng = random.Random(19)
    pieces = ["../", "..\\", "<script>alert(1)</script>", "\u202e", "\u200f", "\x00", "\x1b[31m", "\n", "\t", "é",
              "🌷", "rose", "%2e%2e%2f", "'\"", "&amp;", " " * 5, "a" * 300, "\u0000\ufeff", "<b>", "]]>"]
    events = fb.FeedbackEvents(model, fb.LazyStore.of(model, store), per_minute=1000, clock=clock)
    session = None
    for _ in range(200):
        name = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        status, _, session = events.not_right(answer, session, fb.OTHER, name)
        assert saved(status) or "Not saved." in status
        body = status.split("</strong>", 1)[1]
        assert "<script" not in body and "<b>" not in body
        if saved(status):
            shown = html.unescape(body.split("<bdi>", 1)[1].split("</bdi>", 1)[0])
            assert shown == read_records(store.root)[0]["label"]  # what is shown is what is kept
    records = read_records(store.root)
    assert len(records) <= 1 and all(Path(r["path"]).parent == store.folder for r in records)  # same photo: one
