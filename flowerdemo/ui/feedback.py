"""The "Is this right?" row under an answer: what it says, and the callbacks behind its buttons.

Nothing is saved unless the person clicks. A save is its own event (never on ``/classify``'s path): it takes the
photo the answer kept in the session's ``ResultState`` and the model's answer, and hands them to
:class:`flowerdemo.feedback.FeedbackStore`, which re-encodes the photo and appends the record. Each session may
undo its own save of the photo on screen, and may save at most ``Settings.feedback_per_minute`` times a minute
(``FLOWERDEMO_FEEDBACK_PER_MINUTE``: :class:`SaveRateLimit`, a page concern, not the store's).
"""
from __future__ import annotations

import collections
import html
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..core.verdict import Verdict
from ..feedback import (LABEL_KINDS, MAX_LABEL_LENGTH, NOT_A_FLOWER_LABEL, FeedbackDisabled, FeedbackError,
                        FeedbackStore, LabelKind, as_label_kind, as_verdict)
from ..serve.settings import APP_DIR, DEFAULT_FEEDBACK_PER_MINUTE, ENV_FEEDBACK, Settings
from .runtime import LazyModel, get_model, model_sha256

NAME_MAX_LENGTH = MAX_LABEL_LENGTH  # the box stops there; the store cleans and bounds the name again

# The dropdown's two choices besides the model's species (values no class name can take).
OTHER = "__another_species__"
NOT_A_FLOWER = "__not_a_flower__"
OTHER_CHOICE = ("another species (type its name)", OTHER)
NOT_A_FLOWER_CHOICE = ("not a flower", NOT_A_FLOWER)


@dataclass(frozen=True)
class FeedbackSession:
    """What one browser session (``gr.State``) knows of its saves: its per-minute limit (made on its first
    save: the initial value is deep-copied for every session, and a lock cannot be) and which record belongs
    to the answer on screen (what Undo removes)."""

    limit: SaveRateLimit | None = None
    record_id: str | None = None
    label: str | None = None


# ---------------------------------------------------------------------------------------------------- rate


class SaveRateLimit:
    """At most ``per_minute`` saves in any 60 seconds, for one session (the page keeps one per visitor), so one
    script cannot fill the folder. ``clock`` is injectable for tests."""

    def __init__(self, per_minute: int = DEFAULT_FEEDBACK_PER_MINUTE, clock: Callable[[], float] = time.monotonic):
        self.per_minute = int(per_minute)
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


# ---------------------------------------------------------------------------------------------------- where


def destination(settings: Settings, store=None) -> str:
    """Where saved answers go, in words for the consent line: the dataset repo, or the folder on this server
    (``store``'s, else the one the settings name)."""
    repo = settings.feedback_repo
    folder = _shown_path(getattr(store, "root", None) or settings.feedback_dir)
    if repo:
        return (f"kept in the folder `{folder}` on this server and uploaded every few minutes to the Hugging Face "
                f"dataset `{_no_backticks(repo)}`")
    return f"kept in the folder `{folder}` on this server"


def _shown_path(folder) -> str:
    path = Path(folder)
    try:
        path = path.resolve().relative_to(APP_DIR)
    except ValueError:  # outside the app's folder: shown as configured
        pass
    return _no_backticks(str(path))


def _no_backticks(text: str) -> str:
    return text.replace("`", "'")


# ---------------------------------------------------------------------------------------------------- what it says


def consent_markdown(where: str) -> str:
    return ("<span class='fd-note'>**Nothing is kept unless you click.** A click keeps the photo (re-encoded, "
            "without its EXIF data such as a GPS position), the name you give, the model's answer and verdict, "
            f"the model's SHA-256 and the time; no IP address, no account. It is {where}.</span>")


def shown_name(label: str) -> str:
    """A name a person typed, safe to show back: HTML-escaped, and isolated so right-to-left marks in it cannot
    reorder the sentence around it."""
    return f"<bdi>{html.escape(label, quote=False)}</bdi>"


def thanks_html(record) -> str:
    again = " It replaces the answer saved before for this photo." if record.replaced else ""
    kind = ("it is not a flower" if as_label_kind(record.label_kind) is LabelKind.NOT_A_FLOWER
            else f"it is “{shown_name(record.label)}”")
    return (f"<p class='fd-feedback-saved'><strong>Thank you!</strong> Saved: {kind}.{again} "
            "Undo removes it.</p>")


def failed_html(message: str, title: str = "Not saved.") -> str:
    message = message[:1].upper() + message[1:]
    return f"<p class='fd-feedback-failed'><strong>{title}</strong> {html.escape(message, quote=False)}</p>"


def undone_html(removed: bool) -> str:
    if removed:
        return "<p class='fd-feedback-undone'>Undone: this photo and your answer are no longer kept.</p>"
    return "<p class='fd-feedback-undone'>Nothing to undo: this answer is no longer saved.</p>"


def right_button_text(result) -> str | None:
    """The "Right" button's words for this answer; None when "right" would not name anything (a flower the
    model does not know: the person says which species it is instead)."""
    verdict = as_verdict(result.verdict)
    if verdict is Verdict.NOT_A_FLOWER:
        return "Right: it is not a flower"
    if verdict is Verdict.UNKNOWN_SPECIES:
        return None
    return f"Right: it is {result.top1}"


def not_right_button_text(choice: str | None) -> str:
    if not choice:
        return "Not right"
    if choice == OTHER:
        return "Not right: it is another species"
    if choice == NOT_A_FLOWER:
        return "Not right: it is not a flower"
    return f"Not right: it is {choice}"


def species_choices(class_names, taxonomy=None) -> list[tuple[str, str]]:
    """The dropdown: "another species", "not a flower", then the model's species by name. With a taxonomy each
    entry also shows the names people type ("english marigold — calendula, pot marigold (Calendula officinalis)"):
    the dropdown's filter searches the shown text, so typing "calendula" finds it. The value stays the class name."""
    shown = {name: name for name in class_names}
    if taxonomy is not None:
        for taxon in taxonomy.taxa:
            others = [n for n in (taxon.common_name, *taxon.other_names) if n.casefold() != taxon.class_name.casefold()]
            shown[taxon.class_name] = (taxon.class_name + (f" — {', '.join(dict.fromkeys(others))}" if others else "")
                                       + f" ({taxon.scientific_name})")
    return [OTHER_CHOICE, NOT_A_FLOWER_CHOICE] + [(shown[name], name) for name in sorted(class_names, key=str.casefold)]


# ---------------------------------------------------------------------------------------------------- the store


def open_store(settings: Settings, class_names=()) -> FeedbackStore:
    """The store the settings ask for (folder, size limit, dataset repo), checking "known" names against
    ``class_names``; FeedbackDisabled when saving answers is switched off."""
    if not settings.feedback:
        raise FeedbackDisabled(f"Saving answers is switched off on this server ({ENV_FEEDBACK}=off).")
    return FeedbackStore(settings.feedback_dir, max_mb=settings.feedback_max_mb, class_names=tuple(class_names),
                         repo_id=settings.feedback_repo, upload_every_minutes=settings.feedback_every_minutes)


def store_opener(settings: Settings) -> Callable[[Any], FeedbackStore]:
    """``classifier -> store``: :func:`open_store` for this model's classes, with its uploads to the dataset repo
    started (if one is set). Uploads that cannot start (no token, no Hub) are said once in the log, and answers
    are still kept in the folder rather than lost."""

    def opener(classifier) -> FeedbackStore:
        store = open_store(settings, classifier.class_names)
        try:
            store.start_uploads(space_id=settings.space_id)
        except FeedbackError as error:
            print(f"flowerdemo: saved answers will not be uploaded: {error}", flush=True)
        return store

    return opener


class LazyStore:
    """Opens the store once, on first use (after the model, whose class names it needs), from whichever thread
    gets there first; a failure is not cached, so the next save tries again and says why again."""

    def __init__(self, model: LazyModel, opener: Callable[[Any], Any]):
        self._model = model
        self._opener = opener
        self._lock = threading.Lock()
        self._store = None

    @classmethod
    def of(cls, model: LazyModel, store, settings: Settings | None = None) -> "LazyStore":
        """A ready store (tests, embedding apps), an opener ``classifier -> store``, or None: the store
        ``settings`` ask for (:func:`store_opener`)."""
        if store is None:
            if settings is None:
                raise TypeError("LazyStore.of needs a store, an opener, or the Settings to open one from")
            return cls(model, store_opener(settings))
        if callable(store) and not hasattr(store, "save"):
            return cls(model, store)
        return cls(model, lambda classifier: store)

    @property
    def opened(self):
        return self._store

    def __call__(self):
        store = self._store
        if store is None:
            classifier = get_model(self._model)
            with self._lock:
                if self._store is None:
                    self._store = self._opener(classifier)
                store = self._store
        return store


# ---------------------------------------------------------------------------------------------------- callbacks


def resolve_choice(choice: str | None, other_name: str | None) -> tuple[str, LabelKind]:
    """(label, label_kind) for the "Not right: it is ..." choice."""
    if not choice:
        raise FeedbackError("Pick what it is first: one of the species, another species, or not a flower.")
    if choice == NOT_A_FLOWER:
        return NOT_A_FLOWER_LABEL, LabelKind.NOT_A_FLOWER
    if choice == OTHER:
        if not (other_name or "").strip():
            raise FeedbackError("Type the species' name first, or pick it from the list.")
        return other_name, LabelKind.OTHER
    return choice, LabelKind.KNOWN


class FeedbackEvents:
    """The row's callbacks (plain methods, unit-tested directly). Saves and undos go to ``store`` (a
    :class:`LazyStore`); each session may save ``per_minute`` times a minute (``Settings.feedback_per_minute``),
    counted on ``clock`` (seconds, monotonic)."""

    def __init__(self, model: LazyModel, store: LazyStore, per_minute: int = DEFAULT_FEEDBACK_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic):
        self.model, self.store, self.clock = model, store, clock
        self.per_minute = SaveRateLimit(per_minute).per_minute  # checked now: a bad setting stops the app at start

    # ---- saving

    def save(self, result, session: FeedbackSession | None, label: str, label_kind: LabelKind | str):
        """Save the answer on screen with the person's label: (SavedRecord, the session after it).

        Raises ``FeedbackError`` (no answer, over the limit, or what the store refused) or ``gr.Error`` (no model).
        """
        session = session or FeedbackSession()
        if not result or getattr(result, "photo", None) is None:
            raise FeedbackError("There is no answer to save: add a photo first.")
        limit = session.limit or SaveRateLimit(self.per_minute, self.clock)
        session = replace(session, limit=limit)
        limit.take()
        classifier = get_model(self.model)
        try:
            record = self.store().save(result.photo, label, label_kind, top1=result.top1, verdict=result.verdict,
                                       prediction_set=list(result.prediction_set),
                                       model_sha256=model_sha256(classifier))
        except OSError as error:  # the store words what it foresees; a disk can still fail under it
            raise FeedbackError(f"the server could not write it ({error.strerror or type(error).__name__}); "
                                "try again later") from None
        return record, replace(session, record_id=record.record_id, label=record.label)

    def _page_save(self, result, session, label, label_kind) -> tuple:
        """(status, undo button, session) for the page: a refused or failed save says why, in the row."""
        try:
            record, session = self.save(result, session, label, label_kind)
        except FeedbackError as error:
            return failed_html(str(error)), gr.update(), session or FeedbackSession()
        except gr.Error as error:
            return failed_html(error.message), gr.update(), session or FeedbackSession()
        return thanks_html(record), gr.update(visible=True), session

    def right(self, result, session):
        """ "Right": the model's own answer, confirmed."""
        if not result:
            return self._page_save(result, session, "", LabelKind.KNOWN)  # says there is no answer to save
        if right_button_text(result) is None:
            return (failed_html("This answer names no species to confirm; pick which it is under “Not right”."),
                    gr.update(), session or FeedbackSession())
        if as_verdict(result.verdict) is Verdict.NOT_A_FLOWER:
            return self._page_save(result, session, NOT_A_FLOWER_LABEL, LabelKind.NOT_A_FLOWER)
        return self._page_save(result, session, result.top1, LabelKind.KNOWN)

    def not_right(self, result, session, choice, other_name):
        """ "Not right: it is ...": the species picked, the name typed, or not a flower."""
        try:
            label, kind = resolve_choice(choice, other_name)
        except FeedbackError as error:
            return failed_html(str(error)), gr.update(), session or FeedbackSession()
        return self._page_save(result, session, label, kind)

    def api_save(self, result, session, label, label_kind):
        """The ``/feedback`` endpoint: (label, label_kind) for the session's last ``/classify`` answer; returns the
        saved record as a dict, and refuses with ``gr.Error`` (what an API client wants)."""
        if label_kind not in LABEL_KINDS:
            raise gr.Error(f"label_kind must be one of {', '.join(LABEL_KINDS)}; got {str(label_kind)[:40]!r}",
                           print_exception=False)
        label_kind = LabelKind(label_kind)
        try:
            record, session = self.save(result, session, label or "", label_kind)
        except FeedbackError as error:
            raise gr.Error(str(error), title="Not saved", print_exception=False) from None
        return {"saved": True, "record_id": record.record_id, "file_name": record.file_name, "label": record.label,
                "label_kind": record.label_kind.value, "replaced": record.replaced}, session

    # ---- undo

    def undo(self, session):
        """Undo this session's save of the photo on screen: (status, undo button, session)."""
        session = session or FeedbackSession()
        if session.record_id is None:
            return undone_html(False), gr.update(visible=False), session
        store = self.store.opened
        try:
            removed = bool(store.undo(session.record_id)) if store is not None else False
        except (FeedbackError, OSError) as error:
            return failed_html(str(error), "Not undone."), gr.update(), session
        return undone_html(removed), gr.update(visible=False), replace(session, record_id=None, label=None)

    # ---- the row itself

    def for_answer(self, result, session):
        """After each answer (or cleared / failed input): the row shown afresh for this answer, or hidden when
        there is none. Outputs: (row, right, choice, other name, not right, status, undo, session)."""
        session = replace(session or FeedbackSession(), record_id=None, label=None)  # the limit carries over
        fresh = (gr.update(value=None), gr.update(value="", visible=False),
                 gr.update(value=not_right_button_text(None), interactive=False), "", gr.update(visible=False))
        if not result:
            return (gr.update(visible=False), gr.update()) + fresh + (session,)
        text = right_button_text(result)
        right = gr.update(value=text, visible=True) if text else gr.update(visible=False)
        return (gr.update(visible=True), right) + fresh + (session,)

    @staticmethod
    def choice_changed(choice):
        """(other name box, not-right button) for a new pick in the dropdown."""
        return (gr.update(visible=choice == OTHER),
                gr.update(value=not_right_button_text(choice), interactive=bool(choice)))

    def choices(self):
        """The page-load event filling the dropdown with the model's species."""
        try:
            classifier = get_model(self.model)
        except gr.Error:  # the model panel says why; no answer can come either
            return gr.update(choices=species_choices(()), value=None)
        taxonomy = getattr(getattr(classifier, "metadata", None), "taxonomy", None)
        return gr.update(choices=species_choices(classifier.class_names, taxonomy), value=None)
