"""The checkpoint's SQLite file: its schema, its connections (read-write in WAL mode, read-only), its
transactions, and the one line that names an SQLite failure."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from pathlib import Path

from engine.lock import unwritable_message

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT NOT NULL,
    version_id TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    source_mode TEXT,
    target_mode TEXT,
    action TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_kind TEXT,
    new_etag TEXT,
    bytes_copied INTEGER NOT NULL DEFAULT 0,
    bytes_through_client INTEGER NOT NULL DEFAULT 0,
    plaintext_sha256 TEXT,
    listed_at REAL,
    started_at REAL,
    finished_at REAL,
    actor TEXT,
    queued_run INTEGER,
    PRIMARY KEY (key, version_id)
);
CREATE TABLE IF NOT EXISTS uploads (
    key TEXT NOT NULL,
    version_id TEXT NOT NULL DEFAULT '',
    upload_id TEXT NOT NULL,
    dest_bucket TEXT NOT NULL,
    dest_key TEXT NOT NULL,
    part_size INTEGER NOT NULL,
    source_etag TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (key, version_id)
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS envelopes (
    key TEXT NOT NULL,
    version_id TEXT NOT NULL DEFAULT '',
    dest_key TEXT NOT NULL,
    old_etag TEXT NOT NULL,
    instruction TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (key, version_id)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    exit_code INTEGER,
    summary TEXT
);
"""

# Columns added after the first schema: (name, declaration) for ALTER TABLE on older checkpoints.
ADDED_COLUMNS = (("actor", "TEXT"), ("queued_run", "INTEGER"))

# The index for unfinished rows in key order (replaces the old one on state alone), and the aggregates.
SCHEMA_AFTER_COLUMNS = """
DROP INDEX IF EXISTS objects_state;
CREATE INDEX IF NOT EXISTS objects_state_key ON objects (state, key, version_id);
CREATE TABLE IF NOT EXISTS listing_ranges (
    lo TEXT PRIMARY KEY,
    hi TEXT,
    position TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS totals (
    state TEXT NOT NULL,
    source_mode TEXT NOT NULL,
    action TEXT NOT NULL,
    objects INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    bytes_copied INTEGER NOT NULL DEFAULT 0,
    bytes_through_client INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (state, source_mode, action)
);
"""


def _count(row: str, sign: str) -> str:
    """The statements that move one objects row (NEW or OLD) into (+) or out of (-) its totals row."""
    text = ""
    if sign == "+":
        text += (f"    INSERT OR IGNORE INTO totals (state, source_mode, action)\n"
                 f"        VALUES ({row}.state, COALESCE({row}.source_mode, ''), COALESCE({row}.action, ''));\n")
    return text + (
        f"    UPDATE totals SET objects = objects {sign} 1, bytes = bytes {sign} {row}.size,\n"
        f"        bytes_copied = bytes_copied {sign} {row}.bytes_copied,\n"
        f"        bytes_through_client = bytes_through_client {sign} {row}.bytes_through_client, "
        f"retries = retries {sign} {row}.retries\n"
        f"        WHERE state = {row}.state AND source_mode = COALESCE({row}.source_mode, '')\n"
        f"        AND action = COALESCE({row}.action, '');\n")


# `totals` kept by triggers in the transaction of every write to `objects`
SCHEMA_AFTER_COLUMNS += (
    "CREATE TRIGGER IF NOT EXISTS totals_insert AFTER INSERT ON objects BEGIN\n" + _count("NEW", "+") + "END;\n"
    "CREATE TRIGGER IF NOT EXISTS totals_delete AFTER DELETE ON objects BEGIN\n" + _count("OLD", "-") + "END;\n"
    "CREATE TRIGGER IF NOT EXISTS totals_update\n"
    "AFTER UPDATE OF state, source_mode, action, size, bytes_copied, bytes_through_client, retries ON objects BEGIN\n"
    + _count("OLD", "-") + _count("NEW", "+") + "END;\n")
REBUILD_TOTALS = """
DELETE FROM totals;
INSERT INTO totals (state, source_mode, action, objects, bytes, bytes_copied, bytes_through_client, retries)
    SELECT state, COALESCE(source_mode, ''), COALESCE(action, ''), COUNT(*), COALESCE(SUM(size), 0),
           COALESCE(SUM(bytes_copied), 0), COALESCE(SUM(bytes_through_client), 0), COALESCE(SUM(retries), 0)
    FROM objects GROUP BY 1, 2, 3;
"""


def connect(path: Path, *, exists: bool) -> sqlite3.Connection:
    """A read-write connection in WAL mode. A new checkpoint is created 0600 first, so SQLite's -wal and
    -shm files, which copy the database's mode, are private too; an older world-readable one is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not exists:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
    elif path.stat().st_mode & 0o077 and os.access(path, os.W_OK):
        with contextlib.suppress(OSError):
            path.chmod(0o600)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. In a folder rekey cannot write, SQLite cannot make the -shm file a
    WAL reader needs; then the file is read as immutable (what the last run left committed in it)."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT 1 FROM meta LIMIT 1")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_CANTOPEN" or os.access(path.parent, os.W_OK):
            raise
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def database_error_message(path: Path, exc: sqlite3.Error) -> str:
    """One line for an SQLite failure: only a corrupt file gets the advice to move it aside."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(exc):
        return f"{path}: checkpoint is unusable ({exc}); move it aside to start afresh"
    if name.startswith("SQLITE_FULL") or "disk is full" in str(exc):
        return (f"{path}: cannot write the checkpoint: the disk is full; free space in {path.parent} and run "
                "again to resume (everything recorded so far is kept)")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or name == "SQLITE_AUTH":
        return unwritable_message(path, str(exc))
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return f"{path}: checkpoint is busy ({exc}); another process is writing it"
    return f"{path}: checkpoint error ({exc})"


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
