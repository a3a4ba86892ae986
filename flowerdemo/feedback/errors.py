"""The feedback package's one error type (and its "switched off" case)."""
from __future__ import annotations


class FeedbackError(Exception):
    """A save or undo that could not be done; the message is fit to show the person who asked for it."""


class FeedbackDisabled(FeedbackError):
    """Feedback is switched off (``FLOWERDEMO_FEEDBACK=off``)."""
