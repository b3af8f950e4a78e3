"""The SQLite store's file layout (DDL) and how its connections are opened.

Layout: ``banks``, ``memories`` (one row per retained memory, with its tags, metadata and times),
``memory_tags`` (for tag filters), ``chunks`` (text and the float32 embedding as a BLOB),
``chunks_fts`` (FTS5 over chunk text), ``store_meta`` (embedding dimension, a write generation, a
random id telling this file from a copy or a replacement, which index snapshots record),
``state`` and ``leases``.

The writer adds a batch's FTS rows with one INSERT ... SELECT after its chunks (a per-row trigger
cost a third of the write). Files made before that carry a ``chunks_fts_insert`` trigger doing the
same; it is left in place (processes of the older version may share the file) and the writer then
skips its own FTS insert. Deletions go through the ``chunks_fts_delete`` trigger.

``chunks.text_hash`` and ``chunks.vector_hash`` (indexed) came later: :func:`upgrade` adds them to
older files and fills them in for rows that lack them (also rows an older version sharing the file
wrote since the last open; until then the exact-text and identical-vector lookups do not see those
rows, the rest of search does).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astrocyte.stores._sqlite_sql import text_hash, vector_hash

# Rows hashed per transaction when a file is upgraded (a million rows take seconds, once).
_BACKFILL_BATCH = 20_000

__all__ = ["SCHEMA", "connect", "upgrade"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO store_meta (key, value)
    VALUES ('schema_version', 1), ('generation', 0), ('file_id', lower(hex(randomblob(16))));
CREATE TABLE IF NOT EXISTS banks (bank_id TEXT PRIMARY KEY, created_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    memory_id TEXT NOT NULL,
    bank_id TEXT NOT NULL,
    text TEXT NOT NULL,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    occurred_at TEXT,
    retained_at TEXT NOT NULL,
    event_us INTEGER NOT NULL,      -- COALESCE(occurred_at, retained_at) as UTC microseconds
    retained_us INTEGER NOT NULL,
    source TEXT,
    idempotency_key TEXT,
    UNIQUE (bank_id, memory_id),
    UNIQUE (bank_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS memories_by_event ON memories (bank_id, event_us);
CREATE INDEX IF NOT EXISTS memories_by_retained ON memories (bank_id, retained_us);
CREATE TABLE IF NOT EXISTS memory_tags (
    memory INTEGER NOT NULL, bank_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (memory, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_tags_by_tag ON memory_tags (bank_id, tag, memory);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: it is the vector index key
    memory INTEGER NOT NULL,
    bank_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    bank_key TEXT NOT NULL,                 -- one FTS token naming the bank (see _bank_key)
    -- text_hash: _sqlite_sql.text_hash(text), for exact-text lookups (see upgrade)
    text_hash INTEGER,
    -- vector_hash: _sqlite_sql.vector_hash(embedding), for identical-vector lookups (see upgrade)
    vector_hash INTEGER,
    embedding BLOB NOT NULL                 -- float32, native byte order
);
CREATE INDEX IF NOT EXISTS chunks_by_memory ON chunks (memory);
CREATE INDEX IF NOT EXISTS chunks_by_bank ON chunks (bank_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, bank_key, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, bank_key) VALUES ('delete', old.id, old.text, old.bank_key);
END;
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""


def connect(path: Path, busy_timeout_ms: int, cache_kib: int, mmap_mib: int = 0) -> sqlite3.Connection:
    """An autocommit connection in WAL mode (transactions are explicit ``BEGIN``s)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode survives application crashes; only an OS crash can lose the last commits.
    conn.execute("PRAGMA synchronous = NORMAL")
    # Page caches are per connection; readers keep theirs small and share the OS page cache.
    conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if mmap_mib:
        # Pages read through the mapping skip a copy out of the OS cache into the page cache.
        conn.execute(f"PRAGMA mmap_size = {int(mmap_mib) << 20}")
    return conn


def upgrade(conn: sqlite3.Connection) -> int:
    """Bring a file made by an older version up to :data:`SCHEMA` (after it ran): add and index
    ``chunks.text_hash`` and ``chunks.vector_hash`` and fill them in where they are missing.
    Returns how many rows it hashed."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(chunks)")}
    for column in ("text_hash", "vector_hash"):
        if column not in columns:
            conn.execute(f"ALTER TABLE chunks ADD COLUMN {column} INTEGER")
        conn.execute(f"CREATE INDEX IF NOT EXISTS chunks_by_{column} ON chunks ({column})")
    return _backfill(conn, "text", "text_hash", text_hash) + _backfill(
        conn, "embedding", "vector_hash", vector_hash
    )


def _backfill(conn: sqlite3.Connection, source: str, column: str, hash_of: Callable[[Any], int]) -> int:
    hashed = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                f"SELECT id, {source} FROM chunks WHERE {column} IS NULL LIMIT ?", (_BACKFILL_BATCH,)
            ).fetchall()
            conn.executemany(
                f"UPDATE chunks SET {column} = ? WHERE id = ?", [(hash_of(value), i) for i, value in rows]
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        hashed += len(rows)
        if len(rows) < _BACKFILL_BATCH:
            return hashed
