"""Layered fixtures: a tiny synthetic dataset, tiny trained models, the shipped model root."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from shared_features import ModelRegistry, resolve_params
from shared_features.dataset import read_labeled
from shared_features.training import train_model

# The routing and rollout tests exercise arms v1 (stable) and v2 (canary, 10 %), as the defaults
# were when they were written; they name them here, through the environment that create_app and
# every server these tests start read. The shipped defaults (v3 stable, v2 at 0 %) have their own
# tests (tests/service/test_shipped_defaults.py), which set these back.
PINNED_ARMS = {"TOXISERVE_STABLE_VERSION": "v1", "TOXISERVE_CANARY_VERSION": "v2", "TOXISERVE_CANARY_PERCENT": "10"}
for _name, _value in PINNED_ARMS.items():
    os.environ.setdefault(_name, _value)
# Never the repository's own store (run/toxiserve.sqlite3): the quick start's server keeps its
# rollout there, so a test would read the user's state (v1 not loaded: 404s) and write the tests'
# into it (v1 stable at the user's next start). A test that needs a store of its own names one.
os.environ.setdefault("TOXISERVE_STORE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='toxiserve-tests-')}/store.sqlite3")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = REPO_ROOT / "models"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "toxicity_davidson2017.csv"

TOXIC_WORDS = ["idiot", "stupid", "trash", "moron", "loser", "hate", "dumb", "ugly"]
CLEAN_WORDS = ["lovely", "thanks", "great", "sunny", "friend", "coffee", "music", "happy"]
FILLER = ["the", "a", "you", "are", "so", "today", "really", "this", "is", "@someone", "http://t.co/x"]


def make_rows(n: int, seed: int = 7) -> pd.DataFrame:
    """Synthetic labeled tweets: separable enough to learn, noisy enough to be non-trivial."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = int(rng.random() < 0.6)
        vocab = TOXIC_WORDS if label else CLEAN_WORDS
        words = rng.sample(FILLER, 4) + rng.sample(vocab, 2) + rng.sample(TOXIC_WORDS + CLEAN_WORDS, 1)
        rng.shuffle(words)
        rows.append({"id": i, "text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    make_rows(400).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory, tiny_csv) -> Path:
    """A model root holding toxicity/v1 (word n-grams, 0.5) and toxicity/v2 (char n-grams, auto)."""
    root = tmp_path_factory.mktemp("models")
    data = read_labeled(tiny_csv)
    train_model(data, "toxicity", "v1", resolve_params("word-ngrams"), root, threshold=0.5, preset="word-ngrams")
    train_model(data, "toxicity", "v2", resolve_params("char-ngrams"), root, threshold=None, preset="char-ngrams")
    return root


@pytest.fixture(scope="session")
def shipped_registry() -> ModelRegistry:
    return ModelRegistry(SHIPPED_MODELS)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_file():
        pytest.skip(f"labeled dataset not found at {SHARED_DATA} (it lives beside the repo, in ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reference_proba():
    """`predict_proba(texts)[:, 1]` of the trained scikit-learn pipeline, read from its pickle with joblib:
    the reference every served score must equal to 1e-12 (serving itself never loads the pickle)."""
    import joblib

    cache = {}

    def proba(version: str, texts: list[str], root: Path = SHIPPED_MODELS, name: str = "toxicity"):
        path = Path(root) / name / version / "model.joblib"
        if path not in cache:
            cache[path] = joblib.load(path)
        return cache[path].predict_proba(texts)[:, 1]

    return proba


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def pytest_sessionfinish(session, exitstatus):
    """Test apps' follower threads outlive the session; a line they log then would print after
    pytest's summary (or, with its capture closed, as "--- Logging error ---"), so a newcomer's
    `pytest | tail` showed log lines instead of the result. What the service's handler still holds
    in its buffer is written now, before the summary, and nothing is logged from here on."""
    import logging

    logging.disable(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.flush()
