"""Statements the SQLite store's writer thread runs: inserting records (with idempotency and the
dimension check), deleting memories, bank bookkeeping and statistics.

Every function takes the connection it runs on; the caller owns the transaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

import numpy as np

from astrocyte.errors import ConflictError, NotFoundError, ValidationError
from astrocyte.stores._sqlite_sql import bank_key, micros
from astrocyte.types import BankStats, MemoryRecord

# json.dumps(..., default=str) builds a new encoder per call; one shared encoder gives the same text.
_metadata_json = json.JSONEncoder(default=str).encode

__all__ = [
    "bank_exists",
    "bank_stats",
    "check_dimension",
    "delete_memories",
    "ensure_bank",
    "existing_for_key",
    "generation",
    "insert_record",
    "vectors_of",
]


def generation(conn: sqlite3.Connection) -> int:
    """The file's write generation (bumped by every write transaction of every process)."""
    return int(conn.execute("SELECT value FROM store_meta WHERE key = 'generation'").fetchone()[0])


def delete_memories(conn: sqlite3.Connection, where: str, params: list[Any]) -> tuple[int, list[int]]:
    """Delete matching memories with their tags and chunks (FTS rows go by trigger); returns how
    many memories went and the ids of their chunks (for the caller to drop from the index)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.doomed")
    conn.execute(f"INSERT INTO temp.doomed SELECT m.id FROM memories m WHERE {where}", params)
    chunk_ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE memory IN temp.doomed")]
    conn.execute("DELETE FROM chunks WHERE memory IN temp.doomed")
    conn.execute("DELETE FROM memory_tags WHERE memory IN temp.doomed")
    deleted = conn.execute("DELETE FROM memories WHERE id IN temp.doomed").rowcount
    return int(deleted), chunk_ids


def ensure_bank(conn: sqlite3.Connection, bank_id: str) -> bool:
    """Create the bank row if absent; True when this call created it."""
    created_at = datetime.now(UTC).isoformat()
    cursor = conn.execute(
        "INSERT OR IGNORE INTO banks (bank_id, created_at) VALUES (?, ?)", (bank_id, created_at)
    )
    return bool(cursor.rowcount)


def bank_exists(conn: sqlite3.Connection, bank_id: str) -> bool:
    """Whether the bank row exists."""
    return conn.execute("SELECT 1 FROM banks WHERE bank_id = ?", (bank_id,)).fetchone() is not None


def bank_stats(conn: sqlite3.Connection, bank_id: str) -> BankStats:
    """Counts and retained-at range of a bank; ``NotFoundError`` when it does not exist."""
    if not bank_exists(conn, bank_id):
        raise NotFoundError(f"bank {bank_id!r} does not exist", code="bank_not_found")
    memories = conn.execute("SELECT COUNT(*) FROM memories WHERE bank_id = ?", (bank_id,)).fetchone()[0]
    chunks = conn.execute("SELECT COUNT(*) FROM chunks WHERE bank_id = ?", (bank_id,)).fetchone()[0]
    oldest = conn.execute(
        "SELECT retained_at FROM memories WHERE bank_id = ? ORDER BY retained_us ASC LIMIT 1", (bank_id,)
    ).fetchone()
    newest = conn.execute(
        "SELECT retained_at FROM memories WHERE bank_id = ? ORDER BY retained_us DESC LIMIT 1", (bank_id,)
    ).fetchone()
    return BankStats(
        bank_id=bank_id,
        memory_count=int(memories),
        chunk_count=int(chunks),
        oldest_retained_at=datetime.fromisoformat(oldest[0]) if oldest else None,
        newest_retained_at=datetime.fromisoformat(newest[0]) if newest else None,
    )


def check_dimension(conn: sqlite3.Connection, vectors: list[np.ndarray]) -> int | None:
    """The file's vector size, recorded now when this is the first batch; raises, before anything
    is written, when a vector of the batch has another size."""
    sizes = {int(m.shape[1]) for m in vectors if m.shape[0]}
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'dimension'").fetchone()
    expected = int(row[0]) if row is not None else None
    if expected is None and len(sizes) == 1:
        expected = sizes.pop()
        conn.execute("INSERT INTO store_meta (key, value) VALUES ('dimension', ?)", (expected,))
    wrong = sorted(size for size in sizes if size != expected)
    if wrong:
        raise ValidationError(
            f"embedding has {wrong[0]} dimensions but the store holds {expected}-dimensional "
            "vectors; use the same embedder (and dimensions) the store was filled with",
            code="embedding_dimension_mismatch",
            details={"expected": expected, "got": wrong[0]},
        )
    return expected


def vectors_of(record: MemoryRecord) -> np.ndarray:
    """The record's chunk vectors as one contiguous float32 matrix (rows in chunk order)."""
    if not record.chunks:
        return np.empty((0, 0), dtype=np.float32)
    if len(record.chunks) == 1:  # the usual case: a view of the embedder's row, no stacking
        return np.ascontiguousarray(np.asarray(record.chunks[0].embedding, dtype=np.float32).reshape(1, -1))
    rows = [np.asarray(chunk.embedding, dtype=np.float32).reshape(-1) for chunk in record.chunks]
    if len({row.size for row in rows}) > 1:
        raise ValidationError(
            "the chunks of one memory have vectors of different sizes", code="embedding_dimension_mismatch"
        )
    return np.ascontiguousarray(np.vstack(rows))


def existing_for_key(
    conn: sqlite3.Connection, record: MemoryRecord, batch_keys: dict[tuple[str, str], str]
) -> str | None:
    """The memory id already holding ``record``'s idempotency key, in this batch or the file."""
    key = record.idempotency_key
    if key is None:
        return None
    scoped = (record.bank_id, key)
    if scoped in batch_keys:
        return batch_keys[scoped]
    row = conn.execute(
        "SELECT memory_id FROM memories WHERE bank_id = ? AND idempotency_key = ?", scoped
    ).fetchone()
    if row is not None:
        return str(row[0])
    batch_keys[scoped] = record.memory_id
    return None


def insert_record(conn: sqlite3.Connection, record: MemoryRecord, vectors: np.ndarray) -> list[int]:
    """Insert one memory with its tags and chunks; returns the new chunk rowids."""
    event = record.occurred_at or record.retained_at
    tags = list(dict.fromkeys(record.tags))
    try:
        memory = conn.execute(
            "INSERT INTO memories (memory_id, bank_id, text, tags, metadata, occurred_at, retained_at, "
            "event_us, retained_us, source, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.memory_id,
                record.bank_id,
                record.text,
                json.dumps(tags),
                _metadata_json(record.metadata),
                record.occurred_at.isoformat() if record.occurred_at else None,
                record.retained_at.isoformat(),
                micros(event),
                micros(record.retained_at),
                record.source,
                record.idempotency_key,
            ),
        ).lastrowid
    except sqlite3.IntegrityError as exc:
        raise ConflictError(
            f"memory id {record.memory_id!r} already exists in bank {record.bank_id!r}",
            code="memory_id_exists",
        ) from exc
    conn.executemany(
        "INSERT INTO memory_tags (memory, bank_id, tag) VALUES (?, ?, ?)",
        [(memory, record.bank_id, tag) for tag in tags],
    )
    chunk_ids: list[int] = []
    token = bank_key(record.bank_id)
    for chunk, vector in zip(record.chunks, vectors, strict=True):
        chunk_ids.append(
            conn.execute(
                "INSERT INTO chunks (memory, bank_id, chunk_index, text, bank_key, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (memory, record.bank_id, chunk.index, chunk.text, token, vector.tobytes()),
            ).lastrowid
            or 0  # never 0: lastrowid is set after an INSERT into a rowid table
        )
    return chunk_ids
