"""API keys: held only as sha256 digests, compared in constant time, identified by key id."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from service.errors import UnauthorizedError
from service.observability import metrics
from service.settings import ConfigError

API_KEY_HEADER = "X-API-Key"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """Maps a presented key to its key id. Logs and metrics see the id, never the key."""

    def __init__(self, digests: dict[str, str]) -> None:
        self._digests = digests  # sha256 hex -> key id

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_settings(cls, inline: str | None, path: str | None, variable: str = "TOXISERVE_API_KEYS") -> ApiKeys:
        digests: dict[str, str] = {}
        for index, entry in enumerate(filter(None, (p.strip() for p in (inline or "").split(",")))):
            key_id, sep, key = entry.partition(":")
            if not sep or not key_id or not key:
                raise ConfigError(f"{variable} entry {index + 1} must be 'id:key'")
            digests[key_digest(key)] = key_id
        if path:
            digests.update(cls._read_file(Path(path), variable))
        return cls(digests)

    @staticmethod
    def _read_file(path: Path, variable: str) -> dict[str, str]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{variable}_FILE {path}: {exc.strerror}") from None
        digests = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, sep, digest = line.partition(":")
            digest = digest.strip().lower()
            if not sep or not key_id or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{path}:{number}: expected 'id:<sha256 hex of the key>'")
            digests[digest] = key_id.strip()
        return digests

    def authenticate(self, presented: str | None) -> str:
        """The key id, or UnauthorizedError: the same message whether the key is missing or wrong."""
        key_id = self.identify(presented)
        if key_id is None:
            metrics.AUTH_FAILURES.inc()
            raise UnauthorizedError(f"missing or invalid API key: send it in the {API_KEY_HEADER} header")
        return key_id

    def identify(self, presented: str | None) -> str | None:
        """The key id for a presented key, or None. Every stored digest is compared, match or not."""
        if not presented:
            return None
        digest = key_digest(presented)
        found = None
        for stored, key_id in self._digests.items():
            if hmac.compare_digest(stored, digest):
                found = key_id
        return found
