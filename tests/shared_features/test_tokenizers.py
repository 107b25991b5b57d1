"""Our analyzers produce exactly the tokens of scikit-learn's built-in ones they replace."""

import pickle

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer

from shared_features.text import normalize_texts
from shared_features.tokenizers import CharWbNgrams, WordNgrams, fingerprint, make_tokenizer

PAIRS = [
    (WordNgrams((1, 2)), {"ngram_range": (1, 2)}),
    (WordNgrams((2, 3)), {"ngram_range": (2, 3)}),
    (WordNgrams((1, 1), r"(?u)\b\w+\b"), {"token_pattern": r"(?u)\b\w+\b"}),
    (CharWbNgrams((2, 5)), {"analyzer": "char_wb", "ngram_range": (2, 5)}),
    (CharWbNgrams((1, 1)), {"analyzer": "char_wb", "ngram_range": (1, 1)}),
    (CharWbNgrams((3, 7)), {"analyzer": "char_wb", "ngram_range": (3, 7)}),
]


def sklearn_analyzer(params):
    return TfidfVectorizer(lowercase=False, **params).build_analyzer()


def test_same_tokens_as_scikit_learn_on_the_dataset(shared_data):
    texts = normalize_texts(pd.read_csv(shared_data)["text"].tolist())
    for ours, params in PAIRS:
        theirs = sklearn_analyzer(params)
        assert all(ours(text) == theirs(text) for text in texts), ours.params()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_same_tokens_on_arbitrary_text(text):
    for ours, params in PAIRS:
        assert ours(text) == sklearn_analyzer(params)(text)


def test_pickles_by_name_and_rebuilds_from_its_description():
    for ours, _ in PAIRS:
        assert pickle.loads(pickle.dumps(ours))("a bb ccc") == ours("a bb ccc")
        assert fingerprint(make_tokenizer(ours.name, ours.params())) == fingerprint(ours)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown analyzer"),
        ("word_ngrams", {"ngram_range": [2, 1]}, "ngram_range"),
        ("word_ngrams", {"token_pattern": "(a)(b)"}, "at most one capturing group"),
        ("char_wb_ngrams", {"lowercase": True}, "bad parameters"),
    ],
)
def test_bad_descriptions_are_refused(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_tokenizer(name, params)
