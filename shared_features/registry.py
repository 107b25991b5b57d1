"""ModelRegistry: which models exist under the model root, and loading them safely."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .artifacts import LoadedModel, load_artifact, read_manifest
from .errors import ModelNotFoundError
from .layout import DEFAULT_MODEL_ROOT, MANIFEST_FILE

# Names and versions become path segments: keep them plain so nothing escapes the model root.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: no final "\n"


def _version_key(version: str) -> tuple:
    # v2 < v10: compare numeric runs as numbers.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version))


class ModelRegistry:
    """Read-only view of `<root>/<name>/<version>/`; loads only from inside root."""

    def __init__(
        self, root: str | os.PathLike | None = None, on_version_mismatch: str = "error", allow_pickle: bool = True
    ) -> None:
        self.root = Path(root or DEFAULT_MODEL_ROOT).resolve()
        self.on_version_mismatch = on_version_mismatch
        self.allow_pickle = allow_pickle

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        base = self._inside_root(name)
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if (p / MANIFEST_FILE).is_file() and _SEGMENT.fullmatch(p.name)]
        return sorted(found, key=_version_key)

    def latest(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no versions of model {name!r} under {self.root}")
        return versions[-1]

    def path(self, name: str, version: str) -> Path:
        directory = self._inside_root(name, version)
        if not (directory / MANIFEST_FILE).is_file():
            raise ModelNotFoundError(f"model {name}/{version} not found under {self.root}")
        return directory

    def manifest(self, name: str, version: str) -> dict:
        return read_manifest(self.path(name, version))

    def load(self, name: str, version: str | None = None) -> LoadedModel:
        version = self.latest(name) if version is None else version
        return load_artifact(self.path(name, version), self.on_version_mismatch, self.allow_pickle)

    def _inside_root(self, *segments: str) -> Path:
        for segment in segments:
            if not isinstance(segment, str) or not _SEGMENT.fullmatch(segment):
                raise ModelNotFoundError(f"invalid model name or version {segment!r}")
        directory = self.root.joinpath(*segments).resolve()
        if self.root not in directory.parents:
            raise ModelNotFoundError(f"invalid model path {'/'.join(segments)!r}")
        return directory
