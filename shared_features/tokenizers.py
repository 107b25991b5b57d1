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

from .spans import Tracked

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

    def spans(self, tracked: Tracked) -> list[tuple[str, int, int]]:
        """What `self(tracked.text)` returns, each n-gram with its raw span."""
        group = 1 if self._pattern.groups else 0
        words = [(m.group(group), *tracked.span(*m.span(group))) for m in self._pattern.finditer(tracked.text)]
        return _ngram_spans(words, *self.ngram_range)

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

    def spans(self, tracked: Tracked) -> list[tuple[str, int, int]]:
        """What `self(tracked.text)` returns, each n-gram with the raw span of its letters."""
        low, high = self.ngram_range
        grams: list[tuple[str, int, int]] = []
        for match in re.finditer(r"\S+", tracked.text):
            padded, begin = f" {match.group()} ", match.start()
            length = len(padded)
            # Padded position p is word character p - 1; the pads take the word's first and last.
            first, last = begin, match.end() - 1
            if length <= low:
                grams.append((padded, *tracked.span(first, last + 1)))
                continue
            for n in range(low, min(high, length) + 1):
                for i in range(length - n + 1):
                    start = min(max(begin + i - 1, first), last)
                    end = min(max(begin + i + n - 2, first), last)
                    grams.append((padded[i : i + n], tracked.starts[start], tracked.ends[end]))
        return grams

    def params(self) -> dict[str, Any]:
        return {"ngram_range": list(self.ngram_range)}

    def __reduce__(self):
        return (CharWbNgrams, (self.ngram_range,))


class RobustWordNgrams:
    """Word n-grams over text with its spelling variants folded, for text people type to offend:
    - whole-text rules (`fold_variants`): `n't` -> ` not`, quotation marks -> `xxquote`, `$`/`@`
      inside words, letters repeated three times or more, masked words (`f**k`);
    - token rules: digits inside a word read as letters ("1d10t" -> "idiot"), a run of three or
      more single characters joined ("i d i o t" -> "idiot"), each pictograph (emoji) a token;
    - clause boundaries (punctuation, "but") end an n-gram's reach;
    - `identity_terms` all become one token, `xxgroup`, so that every group is scored alike in
      the same context; with `group_unigram=False` the token appears only inside n-grams, so a
      bare mention of a group moves no score.
    Word-level cost: near the plain word analyzer's (char n-grams cost 3-6x more). Negation marks
    and misspelling keys (sorted letters, consonant skeletons) were measured too: on validation
    data the first lowered every figure and the second changed none, so neither is here."""

    name = "robust_word_ngrams"

    def __init__(self, ngram_range=(1, 2), identity_terms=(), group_unigram: bool = True) -> None:
        self.ngram_range = _ngram_range(ngram_range)
        self.identity_terms = tuple(sorted({str(term) for term in identity_terms}))
        if any(not _WORD.fullmatch(term) or term != term.lower() for term in self.identity_terms):
            raise ValueError("identity_terms must be single lower-case words")
        self.group_unigram = bool(group_unigram)
        self._identity = frozenset(self.identity_terms)

    def __call__(self, text: str) -> list[str]:
        grams: list[str] = []
        clause: list[str] = []
        singles: list[str] = []  # a run of one-character tokens: "i d i o t" is one word spaced out
        # One pass over words and single non-word characters (clause boundaries, pictographs, the rest).
        for token in _TOKEN.findall(fold_variants(text)):
            if len(token) > 1:
                if singles:
                    if len(singles) >= 3:
                        clause.append(_unleet_word("".join(singles)))
                    singles = []
                if token == "but":
                    if clause:
                        self._clause(clause, grams)
                        clause = []
                elif token.isalpha() or token.isdigit():
                    clause.append(token)
                else:
                    clause.append(_unleet_word(token))  # letters and digits mixed: "1d10t", "h4te"
            elif token.isalnum():
                singles.append(token)
            else:
                if singles:
                    if len(singles) >= 3:
                        clause.append(_unleet_word("".join(singles)))
                    singles = []
                if token in _BOUNDARIES:
                    if clause:
                        self._clause(clause, grams)
                        clause = []
                elif _is_pictograph(token):
                    clause.append(token)
        if len(singles) >= 3:
            clause.append(_unleet_word("".join(singles)))
        if clause:
            self._clause(clause, grams)
        return grams

    def spans(self, tracked: Tracked) -> list[tuple[str, int, int]]:
        """What `self(tracked.text)` returns, each n-gram with its raw span: the same pass as
        `__call__`, over (token, start, end); tests hold the two equal on every data row."""
        folded = track_folded(tracked)
        grams: list[tuple[str, int, int]] = []
        clause: list[tuple[str, int, int]] = []
        singles: list[tuple[str, int, int]] = []

        def joined() -> tuple[str, int, int]:
            return _unleet_word("".join(s[0] for s in singles)), singles[0][1], singles[-1][2]

        for match in _TOKEN.finditer(folded.text):
            token, (start, end) = match.group(), folded.span(*match.span())
            if len(token) > 1:
                if singles:
                    if len(singles) >= 3:
                        clause.append(joined())
                    singles = []
                if token == "but":
                    if clause:
                        self._clause_spans(clause, grams)
                        clause = []
                elif token.isalpha() or token.isdigit():
                    clause.append((token, start, end))
                else:
                    clause.append((_unleet_word(token), start, end))
            elif token.isalnum():
                singles.append((token, start, end))
            else:
                if singles:
                    if len(singles) >= 3:
                        clause.append(joined())
                    singles = []
                if token in _BOUNDARIES:
                    if clause:
                        self._clause_spans(clause, grams)
                        clause = []
                elif _is_pictograph(token):
                    clause.append((token, start, end))
        if len(singles) >= 3:
            clause.append(joined())
        if clause:
            self._clause_spans(clause, grams)
        return grams

    def _clause_spans(self, words: list[tuple[str, int, int]], grams: list[tuple[str, int, int]]) -> None:
        identity = self._identity
        unigrams = words
        if identity and any(word in identity for word, _, _ in words):
            words = unigrams = [(GROUP_TOKEN if word in identity else word, start, end) for word, start, end in words]
            if not self.group_unigram:
                unigrams = [word for word in words if word[0] != GROUP_TOKEN]
        low, high = self.ngram_range
        if low == 1:
            grams += unigrams
        grams += _ngram_spans(words, max(low, 2), high)

    def _clause(self, words: list[str], grams: list[str]) -> None:
        low, high = self.ngram_range
        identity = self._identity
        unigrams = words
        if identity and not identity.isdisjoint(words):
            words = unigrams = [GROUP_TOKEN if word in identity else word for word in words]
            if not self.group_unigram:
                unigrams = [word for word in words if word != GROUP_TOKEN]
        if low == 1:
            grams += unigrams
        for n in range(max(low, 2), min(high, len(words)) + 1):
            grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"ngram_range": list(self.ngram_range)}
        if self.identity_terms:
            params["identity_terms"] = list(self.identity_terms)
        if not self.group_unigram:
            params["group_unigram"] = False
        return params

    def __reduce__(self):
        return (RobustWordNgrams, (self.ngram_range, self.identity_terms, self.group_unigram))


GROUP_TOKEN = "xxgroup"
_BOUNDARIES = frozenset(".,;:!?()[]\n")  # a clause ends here
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")  # words, and every other character but spaces on its own
_QUOTES = re.compile(r"[\"\u201c\u201d\u201e\u00ab\u00bb]")
_NEGATION = re.compile(r"n't\b|n\u2019t\b")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SYMBOL_LEET = re.compile(r"(?<=[a-z])[@$]+|[@$]+(?=[a-z])")
_MAYBE_REPEATS = re.compile(r"([a-z])\1\1")
_REPEATS = re.compile(r"([a-z])\1{2,}")
_MASKED = re.compile(r"\b([a-z])[*#]+([a-z]*)")


def _is_pictograph(char: str) -> bool:
    """Emoji and other pictographs carry meaning in hate that avoids words (one token each);
    skin-tone modifiers and variation selectors are not tokens, so one emoji is one token."""
    code = ord(char)
    if 0x1F3FB <= code <= 0x1F3FF:
        return False
    return 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF or 0x1F000 <= code <= 0x1FAFF


def fold_variants(text: str) -> str:
    """Whole-text spelling rules, on normalised text (lower case, single spaces):
    - `n't` becomes ` not` and quotation marks a ` xxquote ` token: negation and quotation are
      what separate "I would never say X" and 'saying "X" is wrong' from X itself;
    - `$` and `@` inside a word ("a$$hole", "b@stard") become letters;
    - runs of three or more of one letter ("stuuupid") become two;
    - a masked word ("f**k", "sh*t") keeps its first letter and the rest (`f*ck` -> `fck`).
    Each rule runs only after a cheap test finds something for it: this is on every request. The
    token-level rules (digits in words, spaced-out letters) are `RobustWordNgrams`'s."""
    if "n't" in text or "n\u2019t" in text:
        text = _NEGATION.sub(" not", text)
    if '"' in text or (not text.isascii() and _QUOTES.search(text)):
        text = _QUOTES.sub(" xxquote ", text)
    if "$" in text or "@" in text:
        text = _SYMBOL_LEET.sub(lambda m: m.group(0).translate(_LEET), text)
    if _MAYBE_REPEATS.search(text):
        text = _REPEATS.sub(r"\1\1", text)
    if "*" in text or "#" in text:
        text = _MASKED.sub(r"\1\2", text)
    return text


def track_folded(tracked: Tracked) -> Tracked:
    """`fold_variants(tracked.text)`, with raw spans (the same rules, in the same order)."""
    text = tracked.text
    if "n't" in text or "n\u2019t" in text:
        tracked = tracked.sub(_NEGATION, " not")
    if '"' in text or (not text.isascii() and _QUOTES.search(text)):
        tracked = tracked.sub(_QUOTES, " xxquote ")
    if "$" in text or "@" in text:
        tracked = tracked.sub(_SYMBOL_LEET, lambda m: m.group(0).translate(_LEET))
    if _MAYBE_REPEATS.search(tracked.text):
        tracked = tracked.sub(_REPEATS, r"\1\1")
    if "*" in text or "#" in text:
        tracked = tracked.sub(_MASKED, r"\1\2")
    return tracked


def _ngram_spans(words: list[tuple[str, int, int]], low: int, high: int) -> list[tuple[str, int, int]]:
    """Every run of low..high words (unigrams first), joined by one space, spanning first to last."""
    grams = list(words) if low == 1 else []
    for n in range(max(low, 2), min(high, len(words)) + 1):
        grams += [
            (" ".join(w[0] for w in words[i : i + n]), words[i][1], words[i + n - 1][2])
            for i in range(len(words) - n + 1)
        ]
    return grams


def _unleet_word(word: str) -> str:
    # Digits read as letters only where the word has letters too ("1d10t"), never in "2024" or "555".
    return word.translate(_LEET) if not word.isdigit() and not word.isalpha() else word


TOKENIZERS = {cls.name: cls for cls in (WordNgrams, CharWbNgrams, RobustWordNgrams)}
# The vectorizer's `analyzer` parameter, as presets and older manifests spell it, to our names.
ANALYZER_NAMES = {"word": WordNgrams.name, "char_wb": CharWbNgrams.name, "robust_word": RobustWordNgrams.name}


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
