"""Open a store by URL: the one place that knows every backend, so no backend imports another."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from service.store.base import Store


def shown_url(url: str) -> str:
    """The store URL as logs may show it: without a password (redis://:secret@host -> redis://***@host)."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def open_store(url: str, namespace: str, timeout: float = 0.25) -> Store:
    """SQLite for one host (nothing to install), Redis across hosts; the backend is imported only when named."""
    if url.startswith("sqlite:///"):
        from service.observability import metrics
        from service.store.sqlite import open_sqlite_store

        return open_sqlite_store(url, namespace, on_reopen=metrics.STORE_ERRORS.labels("file_replaced").inc)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from service.store.redis import open_redis_store

        return open_redis_store(url, namespace, timeout)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")
