"""Metadata lives in setup.cfg. Here only what a static file cannot list without going stale: the
shipped models (every file under models/) and gunicorn.conf.py, installed under
<prefix>/share/toxiserve so that a wheel serves and batch-scores without a checkout
(shared_features.layout.DEFAULT_MODEL_ROOT finds them)."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
SHARE = Path("share") / "toxiserve"


def shipped_models() -> list[tuple[str, list[str]]]:
    by_directory: dict[str, list[str]] = {}
    for path in sorted((ROOT / "models").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(ROOT)
            by_directory.setdefault(str(SHARE / relative.parent), []).append(str(relative))
    return sorted(by_directory.items())


setup(data_files=[(str(SHARE), ["gunicorn.conf.py", "Procfile"]), *shipped_models()])
