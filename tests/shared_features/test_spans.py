"""Spans: the normaliser and every analyzer replayed with raw offsets give exactly the n-grams
scoring sees, and each n-gram's span is where the client typed it (#26)."""

import pytest

from shared_features.functional import generate
from shared_features.presets import IDENTITY_TERMS
from shared_features.sources import load_source, read_spec
from shared_features.spans import track_normalised
from shared_features.text import normalize_text
from shared_features.tokenizers import CharWbNgrams, RobustWordNgrams, WordNgrams
from tests.conftest import SHIPPED_MODELS

ANALYZERS = [
    RobustWordNgrams((1, 2), IDENTITY_TERMS, group_unigram=False),
    RobustWordNgrams((1, 3), ("women",)),
    WordNgrams((1, 2)),
    WordNgrams((1, 1), r"(?u)\b(\w+)\b"),
    CharWbNgrams((2, 5)),
]
EDGES = [
    "I don't  HATE \u201cMuslims\u201d, you 1d10t &amp; i d i o t",
    "RT @some_user: look http://t.co/xyz www.example.com/a?b=c",
    "stuuupid f**k a$$hole b@stard sh#t",
    "\uff26\uff55\uff4c\uff4c\u2003width\u00a0text f\u200buck y\u200cou",
    "e\u0301 cafe\u0301 \ufb01ne \U0001d518\U0001d52b\U0001d526",
    "\u1100\u1161 \u1100\u1161\u11a8",  # Hangul jamo: NFKC composes across base characters
    "\u039f\u0394\u039f\u03a3 \u03a3",  # final sigma: str.lower() reads context
    "&lt;b&gt; &ampx &#128512; &#x1F600 &notit;",
    "\U0001f600\U0001f3fd\ufe0f gay \U0001f308 but they are vermin... or not?!",
    "x",
    "   ",
    "",
]


def check(raw: str) -> None:
    tracked = track_normalised(raw)
    assert tracked.text == normalize_text(raw)
    for analyzer in ANALYZERS:
        spans = analyzer.spans(tracked)
        assert [gram for gram, _, _ in spans] == analyzer(tracked.text), (analyzer.name, raw)
        for _, start, end in spans:
            assert 0 <= start < end <= len(raw)


@pytest.mark.parametrize("raw", EDGES)
def test_spans_give_exactly_the_analyzers_n_grams(raw):
    check(raw)


def test_spans_on_the_whole_functional_suite():
    for case in generate():
        check(case.text)


def test_spans_on_held_out_rows_of_real_data(shared_data):
    spec = {source.name: source for source in read_spec(SHIPPED_MODELS / "toxicity" / "sources.json")}
    for name in ("dynahate2021", "hatemoji2022", "toxigen2022"):
        data = load_source(spec[name])
        for raw in data.part("test")[0]:
            check(raw)


def test_a_span_is_what_the_client_typed():
    raw = "I don't  HATE \u201cMuslims\u201d, you 1d10t &amp; i d i o t"
    spans = {gram: raw[start:end] for gram, start, end in reversed(ANALYZERS[0].spans(track_normalised(raw)))}
    assert spans["not"] == "n't"
    assert spans["not hate"] == "n't  HATE"
    assert spans["xxquote xxgroup"] == "\u201cMuslims"
    assert spans["you idiot"] == "you 1d10t"
    assert spans["idiot"] == "1d10t"  # the first occurrence (reversed: first wins)
    assert raw.index("i d i o t") in [s for g, s, _ in ANALYZERS[0].spans(track_normalised(raw)) if g == "idiot"]


def test_a_step_that_cannot_be_replayed_per_character_spans_the_whole_text():
    raw = "\u1100\u1161 idiot"  # two jamo compose into one syllable: no per-character map exists
    tracked = track_normalised(raw)
    assert tracked.text == normalize_text(raw) == "\uac00 idiot"
    assert set(zip(tracked.starts, tracked.ends, strict=True)) == {(0, len(raw))}  # coarse, still true


def test_a_context_rule_keeps_precise_spans():
    raw = "\u039f\u0394\u039f\u03a3 x"  # upper-case sigma lowers to final sigma at a word's end
    tracked = track_normalised(raw)
    assert tracked.text == "\u03bf\u03b4\u03bf\u03c2 x"
    assert tracked.span(3, 4) == (3, 4)
