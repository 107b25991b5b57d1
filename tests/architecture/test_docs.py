"""The README is a short tour over a documentation site that builds strictly: no dead link, no
missing page, no broken anchor."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")


def test_the_readme_is_read_in_ten_minutes():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) < 300


def test_every_relative_link_of_the_readme_names_a_file_that_exists():
    readme = (REPO_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?://|#)([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links to its documentation"
    missing = [target for target in targets if not (REPO_ROOT / target).exists()]
    assert not missing


def test_every_docs_page_is_in_the_site_navigation():
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    pages = [str(p.relative_to(REPO_ROOT / "docs")) for p in (REPO_ROOT / "docs").rglob("*.md")]
    assert pages and all(page in nav for page in pages), [page for page in pages if page not in nav]


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (the dev extra)")
def test_the_docs_build_strictly(tmp_path):
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").exists()
