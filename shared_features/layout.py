"""Names every tool agrees on, importable without numpy: command lines read them to build --help."""

from __future__ import annotations

from pathlib import Path

# The shipped models; tools name another root with --model-dir / TOXISERVE_MODEL_DIR.
DEFAULT_MODEL_ROOT = Path(__file__).resolve().parent.parent / "models"
MANIFEST_FILE = "manifest.json"
VERSION_POLICIES = ("error", "warn")  # a model trained with other library or normaliser versions
DATA_FORMATS = ("csv", "parquet")
# Public labeled datasets live beside the repo (never copied into it); --data-root / TOXISERVE_DATA_ROOT names another.
DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
