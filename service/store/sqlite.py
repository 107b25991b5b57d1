"""Embedded store: one SQLite file (WAL) shared by every worker process on the host."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from limits.errors import StorageError
from limits.storage import Storage

from service.store.base import (
    AUTOMATIC_BY,
    FEEDBACK_PREFIX,
    HISTORY_KEEP,
    IDEMPOTENCY_PREFIX,
    Claim,
    Store,
    fault_cause,
    folded_hold,
    is_automatic,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS counters_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, response TEXT, expires_at REAL NOT NULL, owner TEXT
);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS feedback (key TEXT PRIMARY KEY, entry TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback_counts (
    namespace TEXT NOT NULL, version TEXT NOT NULL, cell TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (namespace, version, cell)
);
CREATE TABLE IF NOT EXISTS rollout (namespace TEXT PRIMARY KEY, revision INTEGER NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_namespace ON rollout_events (namespace, id);
CREATE TABLE IF NOT EXISTS evidence (
    namespace TEXT NOT NULL, revision INTEGER NOT NULL, field TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (namespace, revision, field)
);
CREATE TABLE IF NOT EXISTS leases (
    namespace TEXT NOT NULL, name TEXT NOT NULL, owner TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (namespace, name)
);
"""
# Files made before claims carried their owner get the column; then the index on it.
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS idempotency_pending_owner ON idempotency (owner) WHERE response IS NULL"
FILE_CHECK_INTERVAL = 1.0  # seconds between checks that the file on disk is still the one we have open
PURGE_EVERY = 500  # writes between sweeps of expired rows: keeps the file bounded without a cron


def is_corruption(exc: BaseException) -> bool:
    """'file is not a database', 'database disk image is malformed': the file is broken, not busy."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return isinstance(cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _migrate_history(conn: sqlite3.Connection) -> None:
    """Files made before the history held entries that change nothing (a controller's holds) kept
    one row per revision: move them, in order, into the event table."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rollout_history'").fetchone()
        if old:
            conn.execute(
                "INSERT INTO rollout_events (namespace, entry) "
                "SELECT namespace, entry FROM rollout_history ORDER BY namespace, revision"
            )
            conn.execute("DROP TABLE rollout_history")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLiteDatabase:
    """One connection per thread and process: sqlite3 connections must not cross forks or threads.

    Each connection checks, at most once a second, that the path still names the file it has open.
    A deleted or replaced file is reopened at once (an error in the log and in store_errors_total):
    otherwise workers keep writing to the deleted inode while a restarted worker creates a new
    file, and limits and idempotency split between them.
    """

    def __init__(self, path: Path, on_reopen=lambda: None) -> None:
        self.path = path
        self.on_reopen = on_reopen
        self._local = threading.local()
        self._writes = 0
        self._created = False
        # A throwaway connection: under preload this runs in the master, and a connection must
        # never be inherited across fork.
        try:
            self._create()
        except (OSError, sqlite3.Error) as exc:  # serve anyway: the failure mode decides, as for any fault
            log.error("store file %s cannot be created (%s); will retry on use", path, fault_cause(exc))

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # again if the directory vanished
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(idempotency)")}
            if "owner" not in columns:
                conn.execute("ALTER TABLE idempotency ADD COLUMN owner TEXT")
            conn.execute(_OWNER_INDEX)
            _migrate_history(conn)
        finally:
            conn.close()
        self._created = True

    def connect(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            now = time.monotonic()
            if now < local.checked_at + FILE_CHECK_INTERVAL:
                return conn
            local.checked_at = now
            if _file_identity(self.path) == local.identity:
                return conn
            log.error(
                "store file %s was deleted or replaced; reopening it (limits and idempotency start afresh)", self.path
            )
            self.on_reopen()
            conn.close()
            self._create()
        elif not self._created:
            self._create()
        # isolation_level=None: autocommit; each statement below is atomic on its own.
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the app
        conn.execute("PRAGMA busy_timeout=5000")
        local.conn, local.pid = conn, os.getpid()
        local.identity, local.checked_at = _file_identity(self.path), time.monotonic()
        return conn

    @contextlib.contextmanager
    def writing(self):
        """Serialise writers across processes on an flock, which the kernel wakes the moment it's
        free. Left to itself, SQLite's busy handler sleeps 1, 2, 5, 10 ms... between retries: that
        was the whole p99 under load. One lock file descriptor per thread, because flock excludes
        per open file description."""
        conn = self.connect()  # first: it may reopen a replaced file, and the lock file with it
        handle = getattr(self._local, "lock", None)
        lock_path = f"{self.path}.lock"
        stale = getattr(self._local, "lock_identity", None) != self._local.identity  # the file was reopened
        if handle is None or self._local.lock_pid != os.getpid() or stale:
            if handle is not None and self._local.lock_pid == os.getpid():
                handle.close()
            handle = open(lock_path, "a+")  # noqa: SIM115 - lives as long as the thread
            self._local.lock, self._local.lock_pid = handle, os.getpid()
            self._local.lock_identity = self._local.identity
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield conn
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            conn = self.connect()
            conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM feedback WHERE expires_at <= ?", (now,))


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
                     value = CASE WHEN expires_at <= ?4 THEN MAX(?2, 0) ELSE value + ?2 END,
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
        # As in Redis: services sharing one file never see each other's ids.
        self.prefix = f"{namespace}:{IDEMPOTENCY_PREFIX}:"

    def claim(self, key: str, fingerprint: str, pending_ttl: float, owner: str) -> Claim:
        return self._claim(self.prefix + key, fingerprint, pending_ttl, owner)

    def _claim(self, key: str, fingerprint: str, pending_ttl: float, owner: str) -> Claim:
        now = time.time()
        # Take the key if it is free or its record expired; one statement, so two workers can't both win.
        with self.db.writing() as conn:
            taken = conn.execute(
                """INSERT INTO idempotency (key, fingerprint, response, expires_at, owner) VALUES (?1, ?2, NULL, ?3, ?5)
               ON CONFLICT (key) DO UPDATE SET fingerprint = ?2, response = NULL, expires_at = ?3, owner = ?5
               WHERE idempotency.expires_at <= ?4
               RETURNING key""",
                (key, fingerprint, now + pending_ttl, now, owner),
            ).fetchone()
            self.db.wrote(now)
        if taken:
            return Claim(owned=True)
        row = (
            self.db.connect().execute("SELECT fingerprint, response FROM idempotency WHERE key = ?", (key,)).fetchone()
        )
        if row is None:  # expired and swept between the two statements: try again
            return self._claim(key, fingerprint, pending_ttl, owner)
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

    def release_owner(self, owner: str) -> int:
        # Its own connection and lock: the gunicorn master calls this, and forks workers after.
        conn = sqlite3.connect(self.db.path, timeout=5.0, isolation_level=None)
        try:
            with open(f"{self.db.path}.lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return conn.execute("DELETE FROM idempotency WHERE owner = ? AND response IS NULL", (owner,)).rowcount
        finally:
            conn.close()

    def ping(self) -> bool:
        """A write, not a read: a store that can be read but not written (a read-only directory, a
        full disk) is not healthy."""
        with self.db.writing() as conn:
            conn.execute("INSERT INTO counters (key, value, expires_at) VALUES ('', 0, 0) ON CONFLICT (key) DO NOTHING")
            conn.execute("UPDATE counters SET expires_at = 0 WHERE key = ''")
        return True

    def answer(self, key: str) -> str | None:
        row = (
            self.db.connect()
            .execute(
                "SELECT response FROM idempotency WHERE key = ? AND expires_at > ? AND response IS NOT NULL",
                (self.prefix + key, time.time()),
            )
            .fetchone()
        )
        return row[0] if row else None


class SQLiteFeedback:
    def __init__(self, database: SQLiteDatabase, namespace: str) -> None:
        self.db, self.namespace = database, namespace
        self.prefix = f"{namespace}:{FEEDBACK_PREFIX}:"

    def record(self, key: str, entry: dict, ttl: float, version: str, cell: str) -> bool:
        now = time.time()
        with self.db.writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                taken = conn.execute(
                    "INSERT INTO feedback (key, entry, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE "
                    "SET entry = ?2, expires_at = ?3 WHERE feedback.expires_at <= ?4 RETURNING key",
                    (self.prefix + key, json.dumps(entry), now + ttl, now),
                ).fetchone()
                if taken:
                    conn.execute(
                        "INSERT INTO feedback_counts (namespace, version, cell, n) VALUES (?, ?, ?, 1) "
                        "ON CONFLICT (namespace, version, cell) DO UPDATE SET n = n + 1",
                        (self.namespace, version, cell),
                    )
                conn.execute("COMMIT")
                return bool(taken)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def counts(self, version: str) -> dict[str, int]:
        rows = self.db.connect().execute(
            "SELECT cell, n FROM feedback_counts WHERE namespace = ? AND version = ?", (self.namespace, version)
        )
        return dict(rows.fetchall())


# The rows of the controller's history entries (`is_automatic`), in SQL.
_AUTOMATIC = f"json_extract(entry, '$.by') IS '{AUTOMATIC_BY}'"


class SQLiteRollout:
    def __init__(self, database: SQLiteDatabase, namespace: str) -> None:
        self.db, self.namespace = database, namespace

    def read(self) -> dict | None:
        row = self.db.connect().execute("SELECT state FROM rollout WHERE namespace = ?", (self.namespace,)).fetchone()
        return json.loads(row[0]) if row else None

    def write(self, expected_revision: int, state: dict, entry: dict) -> bool:
        with self.db.writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT revision FROM rollout WHERE namespace = ?", (self.namespace,)).fetchone()
                if (row[0] if row else 0) != expected_revision:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute(
                    "INSERT INTO rollout (namespace, revision, state) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (namespace) DO UPDATE SET revision = ?2, state = ?3",
                    (self.namespace, state["revision"], json.dumps(state)),
                )
                self._append(conn, entry)
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def record_hold(self, entry: dict) -> None:
        with self.db.writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT id, entry FROM rollout_events WHERE namespace = ? ORDER BY id DESC LIMIT 1",
                    (self.namespace,),
                ).fetchone()
                folded = folded_hold(json.loads(row[1]) if row else None, entry)
                if folded is None:
                    self._append(conn, entry)
                else:
                    folded.pop("id", None)  # the row id is the entry's id
                    conn.execute("UPDATE rollout_events SET entry = ? WHERE id = ?", (json.dumps(folded), row[0]))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _append(self, conn: sqlite3.Connection, entry: dict) -> None:
        """Add a history entry; drop the controller's entries beyond the newest HISTORY_KEEP entries,
        and admin changes beyond the newest HISTORY_KEEP admin changes (automatic entries never push
        an admin change out)."""
        added = conn.execute(
            "INSERT INTO rollout_events (namespace, entry) VALUES (?, ?)", (self.namespace, json.dumps(entry))
        ).lastrowid
        conn.execute(
            "DELETE FROM rollout_events WHERE namespace = ? AND id <= ? AND " + _AUTOMATIC,
            (self.namespace, added - HISTORY_KEEP),
        )
        if not is_automatic(entry):
            conn.execute(
                "DELETE FROM rollout_events WHERE namespace = ? AND NOT " + _AUTOMATIC + " AND id <= ("
                "SELECT id FROM rollout_events WHERE namespace = ? AND NOT " + _AUTOMATIC + " "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.namespace, self.namespace, HISTORY_KEEP),
            )

    def history(self, limit: int, before: int | None = None) -> list[dict]:
        rows = self.db.connect().execute(
            "SELECT id, entry FROM rollout_events WHERE namespace = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (self.namespace, before if before is not None else 1 << 62, limit),
        )
        return [{**json.loads(entry), "id": row_id} for row_id, entry in rows]


class SQLiteEvidence:
    def __init__(self, database: SQLiteDatabase, namespace: str) -> None:
        self.db, self.namespace = database, namespace

    def add(self, tallies: dict[int, dict[str, int]]) -> None:
        rows = [
            (self.namespace, revision, name, n) for revision, fields in tallies.items() for name, n in fields.items()
        ]
        with self.db.writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO evidence (namespace, revision, field, n) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (namespace, revision, field) DO UPDATE SET n = n + excluded.n",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def read(self, first: int, last: int) -> dict[int, dict[str, int]]:
        found: dict[int, dict[str, int]] = {}
        rows = self.db.connect().execute(
            "SELECT revision, field, n FROM evidence WHERE namespace = ? AND revision BETWEEN ? AND ?",
            (self.namespace, first, last),
        )
        for revision, name, n in rows:
            found.setdefault(revision, {})[name] = n
        return found


class SQLiteLeases:
    def __init__(self, database: SQLiteDatabase, namespace: str) -> None:
        self.db, self.namespace = database, namespace

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self.db.writing() as conn:
            taken = conn.execute(
                "INSERT INTO leases (namespace, name, owner, expires_at) VALUES (?1, ?2, ?3, ?4) "
                "ON CONFLICT (namespace, name) DO UPDATE SET owner = ?3, expires_at = ?4 "
                "WHERE leases.owner = ?3 OR leases.expires_at <= ?5 RETURNING owner",
                (self.namespace, name, owner, now + ttl, now),
            ).fetchone()
        return taken is not None

    def holder(self, name: str) -> tuple[str, float] | None:
        row = (
            self.db.connect()
            .execute("SELECT owner, expires_at FROM leases WHERE namespace = ? AND name = ?", (self.namespace, name))
            .fetchone()
        )
        now = time.time()
        return (row[0], row[1] - now) if row and row[1] > now else None

    def release(self, name: str, owner: str) -> None:
        with self.db.writing() as conn:
            conn.execute(
                "DELETE FROM leases WHERE namespace = ? AND name = ? AND owner = ?", (self.namespace, name, owner)
            )


def open_sqlite_store(url: str, namespace: str, on_reopen=lambda: None) -> Store:
    path = Path(url.removeprefix("sqlite:///"))
    database = SQLiteDatabase(path, on_reopen)
    return Store(
        url=url,
        limits=SQLiteLimitsStorage(database),
        idempotency=SQLiteIdempotency(database, namespace),
        rollout=SQLiteRollout(database, namespace),
        feedback=SQLiteFeedback(database, namespace),
        evidence=SQLiteEvidence(database, namespace),
        leases=SQLiteLeases(database, namespace),
        # OSError too: a lock file in a read-only directory, a full disk, a vanished directory are
        # store faults (breaker, failure mode, /readyz), never a 500.
        errors=(sqlite3.Error, StorageError, OSError),
        backend="sqlite",
        is_corruption=is_corruption,
    )
