"""Where each n-gram came from: the normaliser and the analyzers, replayed with every character's
span in the raw text, so an explanation can point at the words a client sent.

Only explanations take this path: scoring never does (it costs several times the plain analyzer).
`Tracked` is a string with, for each of its characters, the `[start, end)` of the raw text it was
made from; each rewrite the normaliser makes (entities, NFKC, lower case, placeholders, spacing,
the robust analyzer's spelling folds) is applied to it as a regex substitution whose replacement
inherits the span of what it replaced. Each step's text is compared with the plain function's, so
the spans never describe a different text than the one scored: where a step cannot be replayed
character by character (rare Unicode compositions), every character of it takes the whole raw
text as its span, which is still true, only less precise.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from . import text as text_rules


@dataclass(frozen=True)
class Tracked:
    text: str
    starts: tuple[int, ...]  # raw start of each character of `text`
    ends: tuple[int, ...]  # raw end of each character of `text`

    @classmethod
    def of(cls, raw: str) -> Tracked:
        return cls(raw, tuple(range(len(raw))), tuple(range(1, len(raw) + 1)))

    def span(self, begin: int, end: int) -> tuple[int, int]:
        """The raw span of `text[begin:end]` (end > begin)."""
        return self.starts[begin], self.ends[end - 1]

    def sub(self, pattern: re.Pattern, replacement: str | Callable[[re.Match], str]) -> Tracked:
        """`pattern.sub(replacement, text)`, each replacement character spanning what it replaced."""
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        position = 0
        for match in pattern.finditer(self.text):
            begin, end = match.span()
            pieces.append(self.text[position:begin])
            starts += self.starts[position:begin]
            ends += self.ends[position:begin]
            new = match.expand(replacement) if isinstance(replacement, str) else replacement(match)
            if new and end > begin:
                start, stop = self.span(begin, end)
                pieces.append(new)
                starts += [start] * len(new)
                ends += [stop] * len(new)
            position = end
        pieces.append(self.text[position:])
        starts += self.starts[position:]
        ends += self.ends[position:]
        return Tracked("".join(pieces), tuple(starts), tuple(ends))

    def map_chars(self, change: Callable[[str], str], clusters: bool = False) -> Tracked:
        """Each character (or, with `clusters`, each base character with its combining marks)
        replaced by `change(it)`, spanning what it replaced."""
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        for begin, end in _clusters(self.text) if clusters else ((i, i + 1) for i in range(len(self.text))):
            new = change(self.text[begin:end])
            start, stop = self.span(begin, end)
            pieces.append(new)
            starts += [start] * len(new)
            ends += [stop] * len(new)
        return Tracked("".join(pieces), tuple(starts), tuple(ends))

    def agree(self, expected: str, raw_length: int) -> Tracked:
        """This text if it is `expected`; else `expected` with the best spans that are still true."""
        if self.text == expected:
            return self
        if len(self.text) == len(expected):  # same characters, a context rule differs (final sigma)
            return Tracked(expected, self.starts, self.ends)
        return Tracked(expected, (0,) * len(expected), (raw_length,) * len(expected))


def _clusters(text: str):
    """(begin, end) of each base character and the combining marks after it: NFKC composes within."""
    begin = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or not unicodedata.combining(text[index]):
            yield begin, index
            begin = index


# html.unescape's own pattern (CPython's html._charref): each match is unescaped alone, as it would be in place.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def track_normalised(raw: str) -> Tracked:
    """`normalize_text(raw)`, with the raw span of every character."""
    size = len(raw)
    step = Tracked.of(raw).sub(_CHARREF, lambda m: html.unescape(m.group(0)))
    step = step.agree(html.unescape(raw), size)
    expected = unicodedata.normalize("NFKC", step.text)
    step = step.map_chars(lambda c: unicodedata.normalize("NFKC", c), clusters=True).agree(expected, size)
    expected = text_rules.strip_format_characters(step.text)
    step = step.map_chars(lambda c: "" if unicodedata.category(c) == "Cf" else c).agree(expected, size)
    step = step.map_chars(str.lower).agree(step.text.lower(), size)
    step = step.sub(text_rules._URL, f" {text_rules.URL_TOKEN} ")
    step = step.sub(text_rules._MENTION, f" {text_rules.MENTION_TOKEN} ")
    step = step.sub(text_rules._WHITESPACE, " ")
    begin, end = len(step.text) - len(step.text.lstrip()), len(step.text.rstrip())
    step = Tracked(step.text[begin:end], step.starts[begin:end], step.ends[begin:end])
    return step.agree(text_rules.normalize_text(raw), size)
