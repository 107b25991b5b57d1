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

URL_TOKEN = "xxurl"
MENTION_TOKEN = "xxuser"

_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"@\w+")
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form of one raw text: entities decoded, NFKC, lower case, URL/@user placeholders."""
    # Unescape first: the raw data holds `&amp;`-style entities that would otherwise become tokens.
    text = unicodedata.normalize("NFKC", html.unescape(text)).lower()
    text = _URL.sub(f" {URL_TOKEN} ", text)
    text = _MENTION.sub(f" {MENTION_TOKEN} ", text)
    return _WHITESPACE.sub(" ", text).strip()


def normalize_texts(texts: Iterable[str]) -> list[str]:
    """Pipeline step (a named function so the fitted pipeline pickles)."""
    return [normalize_text(text) for text in texts]


def rejection_reason(text: object, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Why a value cannot be scored, or None if it can. One rule for the service and the batch job."""
    if text is None:
        return "null"
    if not isinstance(text, str):
        return "not_a_string"
    if len(text) > max_chars:
        return "too_long"
    if not normalize_text(text):
        return "blank"
    return None


# Inputs chosen to exercise every rule above; their normalised forms pin down its behaviour.
_FINGERPRINT_PROBES = (
    "Hello   World",
    "&amp; &lt;b&gt; &#128512;",
    "RT @some_user: look http://t.co/xyz www.example.com/a?b=c",
    "\uff26\uff55\uff4c\uff4c\u2003width\u00a0text",
    "MiXeD\tCase\nlines",
    "  ",
)


def feature_fingerprint() -> str:
    """sha256 over the normaliser's output on fixed probes: stored in the manifest, checked on load."""
    digest = hashlib.sha256()
    for probe in _FINGERPRINT_PROBES:
        digest.update(normalize_text(probe).encode("utf-8") + b"\x00")
    return digest.hexdigest()
