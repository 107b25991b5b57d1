"""Named parameter sets for training (`batchjob train --preset NAME`), importable without scikit-learn."""

from __future__ import annotations

import copy
from typing import Any

# Named parameter sets; `batchjob train --preset NAME` picks one, `--params JSON` overrides keys.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # v1: the dataset README's baseline, on normalised text.
    "word-ngrams": {
        "vectorizer": {"ngram_range": [1, 2], "min_df": 2, "sublinear_tf": True},
        "classifier": {"max_iter": 1000},
    },
    # v2: character n-grams within word boundaries survive misspellings and obfuscation; class
    # weighting and weaker regularisation lift the minority (clean) class.
    "char-ngrams": {
        "vectorizer": {"analyzer": "char_wb", "ngram_range": [2, 5], "min_df": 3, "sublinear_tf": True},
        "classifier": {"max_iter": 1000, "C": 4.0, "class_weight": "balanced"},
    },
    # v3: words with spelling variants folded and identity terms as one token; trained on several
    # sources (models/toxicity/sources.json).
    "robust-words": {
        "vectorizer": {
            "analyzer": "robust_word",
            "ngram_range": [1, 2],
            "identity_terms": None,  # filled from IDENTITY_TERMS below
            "group_unigram": False,  # naming a group is context for n-grams, never a score by itself
            "min_df": 2,
            "sublinear_tf": True,
        },
        "classifier": {"max_iter": 3000, "C": 16.0, "class_weight": "balanced"},
    },
}
# Words that name a protected group; the robust analyzer folds them into one token. Its own list
# (not the evaluation's in models/toxicity/eval/identity_terms.json), recorded in every artifact.
IDENTITY_TERMS = sorted(
    """woman women female females feminist feminists gay gays lesbian lesbians bisexual bisexuals homosexual
    homosexuals queer queers lgbt lgbtq trans transgender transgenders transsexual nonbinary black blacks white
    whites african africans arab arabs asian asians chinese japanese korean koreans indian indians latino latinos
    latina latinas latinx hispanic hispanics mexican mexicans muslim muslims moslem moslems islam islamic jew jews
    jewish christian christians catholic catholics immigrant immigrants migrant migrants refugee refugees foreigner
    foreigners disabled autistic deaf indigenous aboriginal""".split()
)
PRESETS["robust-words"]["vectorizer"]["identity_terms"] = IDENTITY_TERMS
DEFAULT_PRESET = "word-ngrams"


def resolve_params(preset: str = DEFAULT_PRESET, overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """A preset with per-section overrides applied; the result is what the manifest records."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    params = copy.deepcopy(PRESETS[preset])
    for section, values in (overrides or {}).items():
        if section not in params:
            raise ValueError(f"unknown params section {section!r}; expected 'vectorizer' or 'classifier'")
        params[section].update(values)
    return params
