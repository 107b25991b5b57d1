import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_features.text import MAX_TEXT_CHARS, feature_fingerprint, normalize_text, normalize_texts, rejection_reason


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello   World", "hello world"),
        ("fish &amp; chips &lt;3", "fish & chips <3"),
        ("RT @Some_User: look", "rt xxuser : look"),
        ("see http://t.co/AbC and www.x.com/y", "see xxurl and xxurl"),
        ("\uff26\uff55\uff4c\uff4c width", "full width"),
        ("tabs\tand\nnewlines\r\n", "tabs and newlines"),
        ("", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_texts_is_elementwise():
    raw = ["A  b", "@x hi", "&amp;"]
    assert normalize_texts(raw) == [normalize_text(t) for t in raw]


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "null"),
        (3.5, "not_a_string"),
        ("   \n\t", "blank"),
        ("\u00a0\u2003\u200b", "blank"),
        ("&nbsp;", None),  # six visible characters (an entity for a space): not blank, scored as empty text
        ("x" * (MAX_TEXT_CHARS + 1), "too_long"),
        ("x" * MAX_TEXT_CHARS, None),
        ("fine text", None),
    ],
)
def test_rejection_reason(value, reason):
    assert rejection_reason(value) == reason


def test_fingerprint_is_stable_and_tracks_behaviour(monkeypatch):
    first = feature_fingerprint()
    assert first == feature_fingerprint()
    monkeypatch.setattr("shared_features.text._MENTION", __import__("re").compile(r"@nothing-matches-this"))
    assert feature_fingerprint() != first


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("f\u200buck y\u200bou", "fuck you"),  # zero-width space inside words
        ("a\u200cb\u200dc\u2060d\ufeffe", "abcde"),  # ZWNJ, ZWJ, word joiner, BOM
        ("soft\u00adhyphen", "softhyphen"),
        ("\u202eevil\u202c text", "evil text"),  # bidirectional controls
        ("zero&#8203;width", "zerowidth"),  # an entity that decodes to one
        ("caf\u00e9 \u00fcber", "caf\u00e9 \u00fcber"),  # letters are kept
    ],
)
def test_format_characters_are_removed(raw, expected):
    assert normalize_text(raw) == expected


def test_a_text_of_only_format_characters_is_blank():
    assert rejection_reason("\u200b\u200c\u200d\u2060\ufeff") == "blank"


def test_the_blank_characters_are_exactly_those_that_normalise_to_nothing():
    """BLANK_CHARACTER_RANGES (which the API schema's pattern states) recomputed from unicodedata:
    a character of the Basic Multilingual Plane is blank when NFKC makes it white space or format
    characters only."""
    import unicodedata

    from shared_features.text import BLANK_CHARACTER_RANGES

    def normalises_to_nothing(char: str) -> bool:
        return all(c.isspace() or unicodedata.category(c) == "Cf" for c in unicodedata.normalize("NFKC", char))

    listed = {cp for low, high in BLANK_CHARACTER_RANGES for cp in range(low, high + 1)}
    every = (cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF)  # the BMP: see the constant's comment
    assert listed == {cp for cp in every if normalises_to_nothing(chr(cp))}
    assert all(normalize_text(chr(cp)) == "" for cp in listed)


def _blank_characters() -> list[str]:
    from shared_features.text import BLANK_CHARACTER_RANGES

    return [chr(cp) for low, high in BLANK_CHARACTER_RANGES for cp in range(low, high + 1)]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_blank_characters())), max_size=40))
def test_blank_is_what_the_schema_pattern_says(text):
    """The OpenAPI `pattern` of a text (VISIBLE_CHARACTER, a search) and the server's rule agree on
    every string: the schema allows a text exactly when the server does not call it blank."""
    import re

    from shared_features.text import VISIBLE_CHARACTER

    allowed_by_schema = re.search(VISIBLE_CHARACTER, text) is not None
    assert allowed_by_schema == (rejection_reason(text) != "blank")
    if not allowed_by_schema:
        assert normalize_text(text) == ""
