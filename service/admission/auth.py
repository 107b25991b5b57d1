"""API keys: held only as sha256 digests, found by digest, identified by key id."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from service.settings import ConfigError
from service.store.base import AUTOMATIC_BY

API_KEY_HEADER = "X-API-Key"
MIN_KEY_CHARS = 16  # a shorter key is guessable; refused at start
PREFIX_CHARS = 16  # hex digits of a digest that find its key


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """Maps a presented key to its key id. Logs and metrics see the id, never the key."""

    def __init__(self, digests: dict[str, str]) -> None:
        self._digests = digests  # sha256 hex -> key id
        self._by_prefix: dict[str, list[tuple[str, str]]] = {}
        for digest, key_id in digests.items():
            self._by_prefix.setdefault(digest[:PREFIX_CHARS], []).append((digest, key_id))

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_settings(cls, inline: str | None, path: str | None, variable: str = "TOXISERVE_API_KEYS") -> ApiKeys:
        digests: dict[str, str] = {}
        for index, entry in enumerate(filter(None, (p.strip() for p in (inline or "").split(",")))):
            key_id, sep, key = entry.partition(":")
            if not sep or not key_id or not key:
                raise ConfigError(f"{variable} entry {index + 1} must be 'id:key'")
            if len(key) < MIN_KEY_CHARS:
                raise ConfigError(
                    f"{variable} entry {index + 1} ({key_id}): a key needs at least {MIN_KEY_CHARS} characters,"
                    f" this one has {len(key)}"
                )
            digests[key_digest(key)] = key_id
        if path:
            digests.update(cls._read_file(Path(path), variable))
        if AUTOMATIC_BY in digests.values():
            # the rollout history tells the controller's entries from admin changes by this name
            raise ConfigError(f"{variable}: the key id {AUTOMATIC_BY!r} is reserved for the rollout controller")
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

    def identify(self, presented: str | None) -> str | None:
        """The key id for a presented key, or None: one dict lookup, whatever the number of keys.

        Found by the first 16 hex digits of the key's sha256 (timing can tell at most that a guess's
        hash shares them with a stored one), then confirmed on the whole digest in constant time."""
        if not presented:
            return None
        digest = key_digest(presented)
        for stored, key_id in self._by_prefix.get(digest[:PREFIX_CHARS], ()):
            if hmac.compare_digest(stored, digest):
                return key_id
        return None
