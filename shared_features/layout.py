"""Names every tool agrees on, importable without numpy: command lines read them to build --help."""

from __future__ import annotations

import sys
from pathlib import Path

# Where a wheel puts the shipped models and gunicorn.conf.py (setup.py's data_files).
INSTALLED_SHARE = Path(sys.prefix) / "share" / "toxiserve"
_CHECKOUT_MODELS = Path(__file__).resolve().parent.parent / "models"
# The shipped models: the checkout's models/ (an editable install, a clone), else the installed copy;
# tools name another root with --model-dir / TOXISERVE_MODEL_DIR.
DEFAULT_MODEL_ROOT = _CHECKOUT_MODELS if _CHECKOUT_MODELS.is_dir() else INSTALLED_SHARE / "models"
MANIFEST_FILE = "manifest.json"
VERSION_POLICIES = ("error", "warn")  # a model trained with other library or normaliser versions
DATA_FORMATS = ("csv", "parquet")
# Public labeled datasets live beside the repo (never copied into it); --data-root / TOXISERVE_DATA_ROOT names another.
DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
