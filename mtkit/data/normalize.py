"""Text normalisation as pure functions.

Every scheme starts from ``clean``: Unicode NFC, no control characters, the no-break spaces of
French typography (U+00A0, U+202F) turned into plain spaces, and whitespace collapsed. References
used for scoring get exactly this, so scores compare like with like.

``book`` adds the D2L chapter's rules (lowercase, a space before ``, . ! ?``), ``book-cased`` the
same without lowercasing; ``restore_spacing`` undoes the inserted spaces after translation.
"""

from __future__ import annotations

import re
import unicodedata

SCHEMES = ("clean", "book", "book-cased")

_NO_BREAK_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})
# C0/C1 control characters other than whitespace (which str.split already handles).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_BOOK_PUNCT = re.compile(r"(?<=[^ ])([,.!?])")


def clean(text: str) -> str:
    """NFC, no control characters, no-break spaces as spaces, single spaces, no ends."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    # Most lines are printable: no control characters, no space but " " (so no no-break
    # space); they need at most their spaces collapsing. The others take the full treatment.
    if not text.isprintable():
        text = _CONTROL.sub("", text.translate(_NO_BREAK_SPACES))
    elif "  " not in text and not text.startswith(" ") and not text.endswith(" "):
        return text
    return " ".join(text.split())


def book_punctuation(text: str) -> str:
    """The book's rule: a space before each of ``, . ! ?`` that does not follow a space."""
    return _BOOK_PUNCT.sub(r" \1", text)


def normalize(text: str, scheme: str) -> str:
    """Apply a named scheme (``clean``, ``book`` or ``book-cased``) to one sentence."""
    return apply_scheme(clean(text), scheme)


def apply_scheme(cleaned: str, scheme: str) -> str:
    """What a scheme adds to text that ``clean`` already went through."""
    if scheme == "clean":
        return cleaned
    if scheme == "book":
        return book_punctuation(cleaned.lower())
    if scheme == "book-cased":
        return book_punctuation(cleaned)
    raise ValueError(f"unknown normalisation scheme {scheme!r}; choose from {', '.join(SCHEMES)}")


# French typography keeps a space before ! ? : ; and none before . or ,
_SPACE_BEFORE = {"fr": re.compile(r" ([,.])"), "default": re.compile(r" ([,.!?])")}


def restore_spacing(text: str, scheme: str, lang: str) -> str:
    """Undo the spaces a book scheme inserted before punctuation, following ``lang``'s rules."""
    if scheme == "clean":
        return text
    pattern = _SPACE_BEFORE.get(lang, _SPACE_BEFORE["default"])
    return pattern.sub(r"\1", text)
