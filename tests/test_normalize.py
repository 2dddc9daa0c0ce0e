import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mtkit.data.normalize import book_punctuation, clean, normalize, restore_spacing


def test_book_rules_match_the_chapter():
    # The chapter's example and its exact rules: no-break spaces, lowercase, space before ,.!?
    assert normalize("Go.", "book") == "go ."
    assert normalize("Cours\u202f!", "book") == "cours !"
    assert normalize("Ça\xa0alors\u202f!", "book") == "ça alors !"
    assert normalize("I'm home.", "book") == "i'm home ."
    assert normalize("Wait...", "book") == "wait . . ."
    assert normalize("He said, no!", "book-cased") == "He said , no !"


def test_no_space_inserted_after_an_existing_space():
    assert book_punctuation("Va !") == "Va !"


def test_clean_is_nfc_and_collapses_whitespace_and_controls():
    decomposed = "Cafe\u0301\t  au\x00 lait\u2028"
    assert clean(decomposed) == "Café au lait"


def test_restore_spacing_follows_the_language():
    assert restore_spacing("Je suis chez moi .", "book-cased", "fr") == "Je suis chez moi."
    assert restore_spacing("Va !", "book-cased", "fr") == "Va !"
    assert restore_spacing("Go !", "book-cased", "en") == "Go!"
    assert restore_spacing("go !", "clean", "en") == "go !"


def test_normalisation_is_idempotent():
    for text in ["Hello,world!", "Ça va\u202f?", "  a..b  ", "x , y"]:
        for scheme in ("clean", "book", "book-cased"):
            once = normalize(text, scheme)
            assert normalize(once, scheme) == once


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_clean_equals_its_plain_definition(text):
    """``clean`` takes shortcuts for printable text; they change nothing."""
    plain = unicodedata.normalize("NFC", text).replace("\u00a0", " ").replace("\u202f", " ")
    plain = re.sub(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]", "", plain)
    assert clean(text) == " ".join(plain.split())
