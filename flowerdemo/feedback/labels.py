"""What a person may call a photo: the kind of label (:class:`LabelKind`) and the text itself, cleaned and checked
before it is stored. The result is never used in a path (photos are named by their pixels' hash)."""
from __future__ import annotations

import unicodedata
from enum import Enum
from typing import Sequence

from ..core.verdict import Verdict
from .errors import FeedbackError

MAX_LABEL_LENGTH = 80
NOT_A_FLOWER_LABEL = "not a flower"  # the label a "not a flower" answer is stored with when none is typed
UNKNOWN_SPECIES_ANSWER = "unknown species"  # how the summary names an unknown-species verdict
# Control, format (bidi marks, zero-width), surrogate, private-use and unassigned characters.
_FORMAT_CHARS = {"Cf", "Cc", "Cs", "Co", "Cn"}


class LabelKind(str, Enum):
    """What a stored label names. A ``str`` subclass whose values are the words ``metadata.jsonl`` has always
    carried (``label_kind``); code compares members, never strings."""

    KNOWN = "known"  # one of the model's species (checked against its class names)
    OTHER = "other"  # a species the model does not know, as the person typed it
    NOT_A_FLOWER = Verdict.NOT_A_FLOWER.value  # no flower at all: the verdict's own word

    def __str__(self) -> str:  # f-strings and str() write the value, as the plain strings did
        return self.value

    __format__ = str.__format__


LABEL_KINDS = tuple(kind.value for kind in LabelKind)  # the stored words, in order: for messages


def as_label_kind(value) -> LabelKind:
    """The :class:`LabelKind` for a member or its stored word; FeedbackError saying what is accepted otherwise."""
    try:
        return LabelKind(value)
    except (ValueError, TypeError):
        raise FeedbackError(f"label_kind must be one of {', '.join(LABEL_KINDS)}; got {value!r}") from None


def as_verdict(value) -> Verdict | None:
    """The :class:`Verdict` a record or an answer carries (a member, or the plain word read back from disk);
    None for none, or for a word no verdict has (a hand-edited record)."""
    if isinstance(value, Verdict) or value is None:
        return value
    try:
        return Verdict(value)
    except (ValueError, TypeError):
        return None


def sanitize_label(text: str, max_length: int = MAX_LABEL_LENGTH) -> str:
    """Free text made safe to store: NFC, control/format characters (bidi overrides, zero-width) dropped, runs of
    whitespace made one space, at most ``max_length`` characters. HTML is kept as literal text (escaping is
    the page's job)."""
    if not isinstance(text, str):
        raise FeedbackError(f"a label must be text, got {type(text).__name__}")
    kept = "".join(" " if char.isspace() else char for char in text
                   if char.isspace() or unicodedata.category(char) not in _FORMAT_CHARS)
    # NFC after the filter: dropping a zero-width character can bring a letter and its accent together.
    return " ".join(unicodedata.normalize("NFC", kept).split())[:max_length].rstrip()


def check_label(label: str, label_kind, class_names: Sequence[str]) -> str:
    """The label to store for ``label_kind`` (a :class:`LabelKind` or its word), or a FeedbackError saying what
    is accepted."""
    kind = as_label_kind(label_kind)
    clean = sanitize_label(label if label is not None else "")
    if kind is LabelKind.NOT_A_FLOWER:
        return clean or NOT_A_FLOWER_LABEL
    if not clean:
        raise FeedbackError("the name is empty: pick a species from the list, or type the name of another one")
    if kind is LabelKind.KNOWN and class_names:
        by_folded_name = {name.casefold(): name for name in class_names}
        if clean.casefold() not in by_folded_name:
            raise FeedbackError(f"{clean!r} is not one of the model's {len(class_names)} species; "
                                f"pick one from the list, or save it as another species "
                                f"(label_kind '{LabelKind.OTHER}')")
        clean = by_folded_name[clean.casefold()]
    return clean
