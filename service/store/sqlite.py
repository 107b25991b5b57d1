"""Embedded store: one SQLite file (WAL) shared by every worker process on the host."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path

from limits.errors import StorageError
from limits.storage import Storage

from .base import Claim, Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS counters_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, response TEXT, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"""
PURGE_EVERY = 500  # writes between sweeps of expired rows: keeps the file bounded without a cron


class SQLiteDatabase:
    """One connection per thread and process: sqlite3 connections must not cross forks or threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # A throwaway connection: under preload this runs in the master, and a connection must
        # never be inherited across fork.
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        finally:
            conn.close()

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            # isolation_level=None: autocommit; each statement below is atomic on its own.
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the app
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def writing(self):
        """Serialise writers across processes on an flock, which the kernel wakes the moment it's
        free. Left to itself, SQLite's busy handler sleeps 1, 2, 5, 10 ms... between retries: that
        was the whole p99 under load. One lock file descriptor per thread, because flock excludes
        per open file description."""
        handle = getattr(self._local, "lock", None)
        if handle is None or self._local.lock_pid != os.getpid():
            handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - lives as long as the thread
            self._local.lock, self._local.lock_pid = handle, os.getpid()
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield self.connect()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            conn = self.connect()
            conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))


class SQLiteLimitsStorage(Storage):
    """A `limits` storage on SQLite (fixed-window counters), so `limits`' strategies run unchanged."""

    STORAGE_SCHEME = ["toxiserve+sqlite"]

    def __init__(self, database: SQLiteDatabase, wrap_exceptions: bool = True) -> None:
        super().__init__(None, wrap_exceptions=wrap_exceptions)
        self.db = database

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.incr_with_expiry(key, expiry, amount)[0]

    def incr_with_expiry(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """incr, also returning when the window resets: one statement where `limits` needs three."""
        now = time.time()
        with self.db.writing() as conn:
            row = conn.execute(
                """INSERT INTO counters (key, value, expires_at) VALUES (?1, ?2, ?3)
                   ON CONFLICT (key) DO UPDATE SET
                     value = CASE WHEN expires_at <= ?4 THEN ?2 ELSE value + ?2 END,
                     expires_at = CASE WHEN expires_at <= ?4 THEN ?3 ELSE expires_at END
                   RETURNING value, expires_at""",
                (key, amount, now + expiry, now),
            ).fetchone()
            self.db.wrote(now)
        return int(row[0]), float(row[1])

    def get(self, key: str) -> int:
        row = (
            self.db.connect()
            .execute("SELECT value FROM counters WHERE key = ? AND expires_at > ?", (key, time.time()))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        row = (
            self.db.connect()
            .execute("SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now))
            .fetchone()
        )
        return float(row[0]) if row else now

    def check(self) -> bool:
        try:
            self.db.connect().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        return self.db.connect().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        self.db.connect().execute("DELETE FROM counters WHERE key = ?", (key,))


class SQLiteIdempotency:
    def __init__(self, database: SQLiteDatabase, namespace: str) -> None:
        self.db = database
        self.prefix = f"{namespace}:idem:"  # as in Redis: services sharing one file never see each other's ids

    def claim(self, key: str, fingerprint: str, pending_ttl: float) -> Claim:
        return self._claim(self.prefix + key, fingerprint, pending_ttl)

    def _claim(self, key: str, fingerprint: str, pending_ttl: float) -> Claim:
        now = time.time()
        # Take the key if it is free or its record expired; one statement, so two workers can't both win.
        with self.db.writing() as conn:
            taken = conn.execute(
                """INSERT INTO idempotency (key, fingerprint, response, expires_at) VALUES (?1, ?2, NULL, ?3)
               ON CONFLICT (key) DO UPDATE SET fingerprint = ?2, response = NULL, expires_at = ?3
               WHERE idempotency.expires_at <= ?4
               RETURNING key""",
                (key, fingerprint, now + pending_ttl, now),
            ).fetchone()
            self.db.wrote(now)
        if taken:
            return Claim(owned=True)
        row = (
            self.db.connect().execute("SELECT fingerprint, response FROM idempotency WHERE key = ?", (key,)).fetchone()
        )
        if row is None:  # expired and swept between the two statements: try again
            return self._claim(key, fingerprint, pending_ttl)
        return Claim(owned=False, fingerprint=row[0], response=row[1])

    def complete(self, key: str, fingerprint: str, response: str, ttl: float) -> None:
        key = self.prefix + key
        with self.db.writing() as conn:
            conn.execute(
                "UPDATE idempotency SET response = ?, expires_at = ? WHERE key = ? AND fingerprint = ?",
                (response, time.time() + ttl, key, fingerprint),
            )

    def release(self, key: str, fingerprint: str) -> None:
        key = self.prefix + key
        with self.db.writing() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE key = ? AND fingerprint = ? AND response IS NULL", (key, fingerprint)
            )


def open_sqlite_store(url: str, namespace: str) -> Store:
    path = Path(url.removeprefix("sqlite:///"))
    database = SQLiteDatabase(path)
    return Store(
        url=url,
        limits=SQLiteLimitsStorage(database),
        idempotency=SQLiteIdempotency(database, namespace),
        errors=(sqlite3.Error, StorageError),
    )
