"""Text normalisation: the first step of every pipeline, and the rules for texts we refuse to score.

The fitted pipeline pickles a *reference* to `normalize_texts`, not its code, so changing what it
does changes every shipped model's behaviour. `feature_fingerprint()` lets loading detect that.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable

MAX_TEXT_CHARS = 2000
NORMALIZED_GROWTH = 2  # a normalised text may be at most this many times the limit

URL_TOKEN = "xxurl"
MENTION_TOKEN = "xxuser"

# Characters that are nothing to a reader: each normalises (NFKC) to white space or to format
# characters (category Cf), which normalisation removes. A text made only of them is blank. Written
# out as code point ranges so the OpenAPI schema states the very same rule as a pattern
# (`VISIBLE_CHARACTER`); tests/shared_features/test_text.py recomputes them from unicodedata. Only
# the Basic Multilingual Plane: a pattern cannot name a character above it in every JSON Schema
# dialect and loader, so the few invisible ones up there (tags, musical format controls) are not
# blank here; a text of only those normalises to empty and is scored as the empty text.
BLANK_CHARACTER_RANGES = (
    (0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0xAD, 0xAD), (0x600, 0x605),
    (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x1680, 0x1680),
    (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F), (0x205F, 0x2064), (0x2066, 0x206F),
    (0x3000, 0x3000), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)  # fmt: skip
VISIBLE_CHARACTER = (
    "[^"
    + "".join(f"\\u{low:04x}" + ("" if low == high else f"-\\u{high:04x}") for low, high in BLANK_CHARACTER_RANGES)
    + "]"
)
_VISIBLE = re.compile(VISIBLE_CHARACTER)

_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"@\w+")
_WHITESPACE = re.compile(r"\s+")


def strip_format_characters(text: str) -> str:
    """Remove Unicode format characters (category Cf): zero-width space and joiners, word joiner,
    soft hyphen, byte-order mark, bidirectional controls. They are invisible, so a reader sees
    `f\u200buck` as one word, and removing them makes the model see it too (they would otherwise split
    or hide tokens). A text of nothing else becomes empty, so it is refused as blank."""
    if text.isascii():  # no format characters below U+0080: the common case costs one C call
        return text
    return "".join(char for char in text if unicodedata.category(char) != "Cf")


def normalize_text(text: str) -> str:
    """Canonical form of one raw text: entities decoded, NFKC, format characters removed, lower case,
    URL/@user placeholders."""
    # Unescape first: the raw data holds `&amp;`-style entities that would otherwise become tokens.
    text = strip_format_characters(unicodedata.normalize("NFKC", html.unescape(text))).lower()
    text = _URL.sub(f" {URL_TOKEN} ", text)
    text = _MENTION.sub(f" {MENTION_TOKEN} ", text)
    return _WHITESPACE.sub(" ", text).strip()


def normalize_texts(texts: Iterable[str]) -> list[str]:
    """Pipeline step (a named function so the fitted pipeline pickles)."""
    return [normalize_text(text) for text in texts]


def screen_text(value: object, max_chars: int = MAX_TEXT_CHARS) -> tuple[str | None, str | None]:
    """(normalised text, None) if `value` can be scored, else (None, reason).

    One rule for the service and the batch job. The normalised text is returned so callers score it
    without normalising twice (normalisation is ~30% of a word-n-gram model's scoring time).
    """
    if value is None:
        return None, "null"
    if not isinstance(value, str):
        return None, "not_a_string"
    if len(value) > max_chars:
        return None, "too_long"
    if _VISIBLE.search(value) is None:  # the rule the API schema states: at least one visible character
        return None, "blank"
    # Not blank, yet possibly empty once normalised (`&nbsp;` is an entity for a space): the model
    # then scores the empty text, as it would any text with no known feature.
    normalized = normalize_text(value)
    # NFKC can multiply a character (U+FDFA becomes 18): the limit holds after normalisation too,
    # with room for ordinary growth (ligatures, full-width forms), so no text multiplies the work.
    if len(normalized) > NORMALIZED_GROWTH * max_chars:
        return None, "too_long"
    return normalized, None


def rejection_reason(value: object, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Why a value cannot be scored, or None if it can."""
    return screen_text(value, max_chars)[1]


# Inputs chosen to exercise every rule above; their normalised forms pin down its behaviour.
_FINGERPRINT_PROBES = (
    "Hello   World",
    "&amp; &lt;b&gt; &#128512;",
    "RT @some_user: look http://t.co/xyz www.example.com/a?b=c",
    "\uff26\uff55\uff4c\uff4c\u2003width\u00a0text",
    "MiXeD\tCase\nlines",
    "f\u200buck y\u200cou\u2060 \ufeffsoft\u00adhyphen \u202eltr&#8203;",
    "  ",
)


def feature_fingerprint() -> str:
    """sha256 over the normaliser's output on fixed probes: stored in the manifest, checked on load."""
    digest = hashlib.sha256()
    for probe in _FINGERPRINT_PROBES:
        digest.update(normalize_text(probe).encode("utf-8") + b"\x00")
    return digest.hexdigest()
