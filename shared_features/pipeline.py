"""build_pipeline(params): the one way features are made, for training, serving and batch scoring.

The vectorizer's analyzer is one of ours (`tokenizers.py`), named by the `analyzer` parameter
(`word`, the default, or `char_wb`, as scikit-learn spells them) with `ngram_range` and
`token_pattern`; TF-IDF weighting and the classifier are scikit-learn's.
"""

from __future__ import annotations

from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from .text import normalize_texts
from .tokenizers import ANALYZER_NAMES, TOKENIZERS, make_tokenizer

_ANALYZER_KEYS = ("analyzer", "ngram_range", "token_pattern", "identity_terms", "group_unigram")
# Options a callable analyzer makes scikit-learn ignore: refused rather than silently dropped.
_IGNORED_WITH_OUR_ANALYZER = ("preprocessor", "tokenizer", "stop_words", "strip_accents")


def analyzer_for(vectorizer_params: dict[str, Any]):
    """Our tokenizer for the vectorizer params (`analyzer`, `ngram_range`, `token_pattern`)."""
    name = vectorizer_params.get("analyzer", "word")
    name = ANALYZER_NAMES.get(name, name)
    if name not in TOKENIZERS:
        raise ValueError(f"unsupported analyzer {name!r}; choose one of {sorted(ANALYZER_NAMES)}")
    params = {key: vectorizer_params[key] for key in _ANALYZER_KEYS[1:] if key in vectorizer_params}
    return make_tokenizer(name, params)


def build_pipeline(params: dict[str, dict[str, Any]]) -> Pipeline:
    """normalise -> TF-IDF (our analyzer) -> logistic regression, from JSON-safe params."""
    given = dict(params.get("vectorizer", {}))
    refused = [key for key in _IGNORED_WITH_OUR_ANALYZER if given.get(key) is not None]
    if refused or given.get("lowercase"):
        raise ValueError(f"vectorizer options {refused or ['lowercase']} are not supported: the normaliser does that")
    vectorizer = {key: value for key, value in given.items() if key not in _ANALYZER_KEYS}
    vectorizer["analyzer"] = analyzer_for(given)
    vectorizer["lowercase"] = False  # the normaliser already lower-cases (after NFKC)
    classifier = dict(params.get("classifier", {}))
    classifier.setdefault("random_state", 0)
    return Pipeline(
        [
            ("normalise", FunctionTransformer(normalize_texts)),
            ("tfidf", TfidfVectorizer(**vectorizer)),
            ("clf", LogisticRegression(**classifier)),
        ]
    )
