import pytest

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
        ("&nbsp;", "blank"),
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
