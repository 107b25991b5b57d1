"""The data-only scorer artifact: `scorer.json` + `scorer.npz`, loaded with numpy and never unpickled.

    scorer.json  format, analyzer {name, params, fingerprint}, tf/norm flags, threshold, sizes
    scorer.npz   terms (UTF-8, newline-separated, column order), idf, coef, intercept
                 (np.load(allow_pickle=False): arrays of numbers and bytes only)

Format /2 adds category heads: `categories` (names) in scorer.json, `category_coef` [c, terms] and
`category_intercept` [c] in scorer.npz. A model without categories is still written as /1, so
older servers keep loading it; a server that knows only /1 refuses a /2 artifact rather than
serving it without the categories its manifest promises.

The manifest lists both files with their sha256; `read_scorer` verifies the bytes before parsing
them. `from_pipeline` builds a scorer from a fitted pipeline (the only place that needs
scikit-learn), and `check_reproduces` is the gate training and `batchjob export` pass before a
manifest may name the artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FeatureCodeMismatchError, ModelError
from .scorer import NORMS, LinearScorer
from .tokenizers import ANALYZER_NAMES, DEFAULT_TOKEN_PATTERN, describe, fingerprint, make_tokenizer

FORMAT = "toxiserve.linear-tfidf/1"
FORMAT_WITH_CATEGORIES = "toxiserve.linear-tfidf/2"
JSON_FILE, ARRAYS_FILE = "scorer.json", "scorer.npz"
TOLERANCE = 1e-12  # largest |score difference| from predict_proba a scorer may show to be written


class UnsupportedPipeline(ModelError):
    """The fitted pipeline is not normalise -> TF-IDF (our analyzer) -> binary logistic regression."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _analyzer_of(vectorizer):
    """Our tokenizer for the vectorizer: the callable it was given, or, for pipelines trained before
    the analyzers were ours, the equivalent of its built-in 'word' / 'char_wb' analyzer (the
    reproduction check then proves the equivalence on real data)."""
    if callable(vectorizer.analyzer):
        if not hasattr(vectorizer.analyzer, "params"):
            raise UnsupportedPipeline("the vectorizer's analyzer is not one of shared_features.tokenizers")
        return vectorizer.analyzer
    name = ANALYZER_NAMES.get(vectorizer.analyzer)
    if name is None or vectorizer.preprocessor or vectorizer.tokenizer or vectorizer.stop_words:
        raise UnsupportedPipeline(f"unsupported analyzer settings (analyzer={vectorizer.analyzer!r})")
    if vectorizer.lowercase or vectorizer.strip_accents:
        raise UnsupportedPipeline("the vectorizer lower-cases or strips accents itself; the normaliser must")
    params: dict[str, Any] = {"ngram_range": list(vectorizer.ngram_range)}
    if name == "word_ngrams":
        params["token_pattern"] = vectorizer.token_pattern or DEFAULT_TOKEN_PATTERN
    return make_tokenizer(name, params)


def from_pipeline(pipeline, portable: bool = True, heads: dict | None = None) -> LinearScorer:
    """The scorer for a fitted pipeline, or UnsupportedPipeline saying why there is none.

    `portable`: with a named analyzer of ours, so it can be written as data. Otherwise (serving a
    pickle that is already loaded) it keeps the vectorizer's own analyzer, exact by construction.
    `heads`: {category: binary LogisticRegression fitted on the pipeline's TF-IDF features}."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from .text import normalize_texts

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 3:
        raise UnsupportedPipeline("not a 3-step Pipeline")
    normaliser, vectorizer, classifier = (step for _, step in steps)
    if getattr(normaliser, "func", None) is not normalize_texts:
        raise UnsupportedPipeline("first step is not shared_features.text.normalize_texts")
    if type(vectorizer) is not TfidfVectorizer:
        raise UnsupportedPipeline("second step is not a TfidfVectorizer")
    if vectorizer.norm not in NORMS or not vectorizer.use_idf or vectorizer.dtype is not np.float64:
        raise UnsupportedPipeline(f"unsupported TfidfVectorizer options (norm={vectorizer.norm})")
    if not isinstance(classifier, LogisticRegression) or classifier.coef_.shape[0] != 1:
        raise UnsupportedPipeline("last step is not a binary LogisticRegression")
    if list(classifier.classes_) != [0, 1]:
        raise UnsupportedPipeline(f"classes are {list(classifier.classes_)}, not [0, 1]")
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    heads = heads or {}
    for category, head in heads.items():
        if not isinstance(head, LogisticRegression) or head.coef_.shape != (1, len(terms)):
            raise UnsupportedPipeline(f"category {category!r}: not a binary LogisticRegression over the same features")
    return LinearScorer(
        analyzer=_analyzer_of(vectorizer) if portable else vectorizer.build_analyzer(),
        terms=terms,
        idf=vectorizer.idf_,
        coef=classifier.coef_[0],
        intercept=float(classifier.intercept_[0]),
        sublinear=vectorizer.sublinear_tf,
        binary=vectorizer.binary,
        norm=vectorizer.norm,
        categories=tuple(heads),
        category_coef=np.array([head.coef_[0] for head in heads.values()]).reshape(len(heads), len(terms)),
        category_intercept=np.array([float(head.intercept_[0]) for head in heads.values()]),
    )


def check_reproduces(scorer: LinearScorer, pipeline, texts: list[str], heads: dict | None = None) -> dict[str, Any]:
    """Both scoring paths against `pipeline.predict_proba` on `texts`, and the category scores
    against each head's; ModelError beyond TOLERANCE."""
    from .text import normalize_texts

    expected = pipeline.predict_proba(texts)[:, 1]
    normalised = normalize_texts(texts)
    worst = max(
        float(np.abs(scorer.per_text(normalised)[0] - expected).max(initial=0.0)),
        float(np.abs(scorer.vectorised(normalised)[0] - expected).max(initial=0.0)),
    )
    if heads and texts:
        features = pipeline[:-1].transform(texts)
        expected_categories = np.column_stack([head.predict_proba(features)[:, 1] for head in heads.values()])
        worst = max(worst, float(np.abs(scorer.category_scores(normalised) - expected_categories).max()))
    if not worst <= TOLERANCE:  # also refuses NaN
        raise ModelError(
            f"the data-only scorer differs from predict_proba by {worst:.3g} (> {TOLERANCE:g}) on "
            f"{len(texts)} texts; refusing to write it"
        )
    return {"rows": len(texts), "max_abs_difference": worst, "tolerance": TOLERANCE}


def write_scorer(scorer: LinearScorer, directory: Path, threshold: float, write_atomic) -> dict[str, str]:
    """Write both files (each atomically); returns {file name: sha256} for the manifest."""
    if any("\n" in term for term in scorer.terms):
        raise UnsupportedPipeline("a vocabulary term holds a newline; the normaliser should have folded it")
    buffer = io.BytesIO()
    extra = {}
    if scorer.categories:
        extra = {"category_coef": scorer.category_coef, "category_intercept": scorer.category_intercept}
    np.savez(
        buffer,
        terms=np.frombuffer("\n".join(scorer.terms).encode("utf-8"), dtype=np.uint8),
        idf=scorer.idf,
        coef=scorer.coef,
        intercept=np.float64(scorer.intercept),
        **extra,
    )
    arrays = buffer.getvalue()
    meta = {
        "format": format_of(scorer),
        "analyzer": describe(scorer.analyze),
        "sublinear_tf": scorer.sublinear,
        "binary": scorer.binary,
        "norm": scorer.norm,
        "threshold": threshold,
        "vocabulary_size": len(scorer.terms),
        "arrays": ARRAYS_FILE,
        "arrays_sha256": _sha256(arrays),
    }
    if scorer.categories:
        meta["categories"] = list(scorer.categories)
    described = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(directory / ARRAYS_FILE, lambda tmp: Path(tmp).write_bytes(arrays))
    write_atomic(directory / JSON_FILE, lambda tmp: Path(tmp).write_bytes(described))
    return {JSON_FILE: _sha256(described), ARRAYS_FILE: _sha256(arrays)}


def format_of(scorer: LinearScorer) -> str:
    return FORMAT_WITH_CATEGORIES if scorer.categories else FORMAT


def _read_verified(directory: Path, name: str, expected: str | None) -> bytes:
    path = directory / name
    try:
        data = path.read_bytes()  # read once: the bytes verified are the bytes parsed
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if _sha256(data) != expected:
        from .errors import ChecksumMismatchError

        raise ChecksumMismatchError(
            f"checksum mismatch for {path}: manifest says {expected}, file is {_sha256(data)}; refusing to load"
        )
    return data


def read_scorer(directory: Path, files: dict[str, str], threshold: float) -> LinearScorer:
    """Verify both files against the manifest's sha256s, then build the scorer from them."""
    meta_bytes = _read_verified(directory, JSON_FILE, files.get(JSON_FILE))
    arrays_bytes = _read_verified(directory, ARRAYS_FILE, files.get(ARRAYS_FILE))
    try:
        meta = json.loads(meta_bytes)
        if meta.get("format") not in (FORMAT, FORMAT_WITH_CATEGORIES):
            raise ModelError(f"{directory / JSON_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta["threshold"] != threshold:
            raise ModelError(f"{directory}: scorer threshold {meta['threshold']} differs from the manifest's")
        analyzer = make_tokenizer(meta["analyzer"]["name"], meta["analyzer"]["params"])
        categories = tuple(meta.get("categories", ())) if meta["format"] == FORMAT_WITH_CATEGORIES else ()
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as arrays:
            terms = arrays["terms"].tobytes().decode("utf-8").split("\n")
            heads = (arrays["category_coef"], arrays["category_intercept"]) if categories else (None, None)
            scorer = LinearScorer(
                analyzer,
                terms,
                arrays["idf"],
                arrays["coef"],
                float(arrays["intercept"]),
                meta["sublinear_tf"],
                meta["binary"],
                meta["norm"],
                categories,
                *heads,
            )
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ModelError(f"unreadable data-only scorer in {directory}: {type(exc).__name__}: {exc}") from None
    if fingerprint(analyzer) != meta["analyzer"]["fingerprint"]:
        raise FeatureCodeMismatchError(
            f"model {directory}: analyzer {analyzer.name} now tokenises differently from the one it was trained with"
        )
    return scorer
