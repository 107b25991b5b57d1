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
}
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
