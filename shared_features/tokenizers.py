"""The TF-IDF analyzers: named callables that training, serving and the batch job all run.

`build_pipeline` passes one to `TfidfVectorizer(analyzer=...)`, so the vectorizer counts exactly
the tokens these produce; the data-only scorer (`scorer.py`) records the analyzer's name and
parameters and calls the same code. Nothing here depends on scikit-learn.

Both analyzers take text that `normalize_text` has already cleaned (lower case, folded whitespace).
`fingerprint()` hashes their output on fixed probes; an artifact records it, and loading refuses an
artifact whose analyzer now tokenises differently.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # words of two or more word characters


def _ngram_range(value) -> tuple[int, int]:
    low, high = (int(n) for n in value)
    if not 1 <= low <= high:
        raise ValueError(f"ngram_range must be (min_n, max_n) with 1 <= min_n <= max_n, not {value!r}")
    return low, high


class WordNgrams:
    """Word n-grams: tokens matching `token_pattern`, then every run of min_n..max_n of them joined by
    one space (unigrams first, then bigrams, ...)."""

    name = "word_ngrams"

    def __init__(self, ngram_range=(1, 1), token_pattern: str = DEFAULT_TOKEN_PATTERN) -> None:
        self.ngram_range = _ngram_range(ngram_range)
        self.token_pattern = token_pattern
        self._pattern = re.compile(token_pattern)
        if self._pattern.groups > 1:
            raise ValueError("token_pattern may hold at most one capturing group")

    def __call__(self, text: str) -> list[str]:
        words = self._pattern.findall(text)
        low, high = self.ngram_range
        grams = list(words) if low == 1 else []
        for n in range(max(low, 2), min(high, len(words)) + 1):
            grams.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return grams

    def params(self) -> dict[str, Any]:
        return {"ngram_range": list(self.ngram_range), "token_pattern": self.token_pattern}

    def __reduce__(self):  # pickles by name and parameters, never the compiled pattern
        return (WordNgrams, (self.ngram_range, self.token_pattern))


class CharWbNgrams:
    """Character n-grams inside word boundaries: each whitespace-separated word is padded with one
    space on each side and cut into every n-gram of min_n..max_n characters. A padded word shorter
    than min_n gives itself once."""

    name = "char_wb_ngrams"

    def __init__(self, ngram_range=(1, 1)) -> None:
        self.ngram_range = _ngram_range(ngram_range)

    def __call__(self, text: str) -> list[str]:
        low, high = self.ngram_range
        grams: list[str] = []
        for word in text.split():
            padded = f" {word} "
            length = len(padded)
            if length <= low:
                grams.append(padded)
                continue
            # One comprehension per word: the hot loop of char n-gram models (a generator per n was 1.5x slower).
            grams += [padded[i : i + n] for n in range(low, min(high, length) + 1) for i in range(length - n + 1)]
        return grams

    def params(self) -> dict[str, Any]:
        return {"ngram_range": list(self.ngram_range)}

    def __reduce__(self):
        return (CharWbNgrams, (self.ngram_range,))


TOKENIZERS = {cls.name: cls for cls in (WordNgrams, CharWbNgrams)}
# The vectorizer's `analyzer` parameter, as presets and older manifests spell it, to our names.
ANALYZER_NAMES = {"word": WordNgrams.name, "char_wb": CharWbNgrams.name}


def make_tokenizer(name: str, params: dict[str, Any]):
    try:
        cls = TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {sorted(TOKENIZERS)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for analyzer {name!r}: {exc}") from None


def describe(tokenizer) -> dict[str, Any]:
    """What an artifact records: enough to rebuild the analyzer and to check it behaves the same."""
    return {"name": tokenizer.name, "params": tokenizer.params(), "fingerprint": fingerprint(tokenizer)}


_PROBES = (
    "hello world",
    "a bb ccc dddd eeeee ffffff",
    "xxuser rt: look xxurl at this!! 12 34_56",
    "ﬁne naïve café 𝔘𝔫𝔦 😀 you're don't",
    "x",
    "",
)


def fingerprint(tokenizer) -> str:
    digest = hashlib.sha256(tokenizer.name.encode())
    for probe in _PROBES:
        digest.update("\x00".join(tokenizer(probe)).encode("utf-8") + b"\x01")
    return digest.hexdigest()
