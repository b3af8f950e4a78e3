"""Statements the SQLite store's writer thread runs: inserting records (with idempotency and the
dimension check), deleting memories, bank bookkeeping and statistics.

Every function takes the connection it runs on; the caller owns the transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from astrocyte.errors import NotFoundError, ValidationError
from astrocyte.stores._sqlite_sql import bank_key, micros, text_hash, vector_hash
from astrocyte.types import BankStats, InsertOutcome, MemoryRecord

# json.dumps(..., default=str) builds a new encoder per call; one shared encoder gives the same text.
_metadata_json = json.JSONEncoder(default=str).encode

__all__ = [
    "bank_exists",
    "bank_stats",
    "check_dimension",
    "delete_memories",
    "ensure_bank",
    "find_keys",
    "generation",
    "insert_records",
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


def insert_records(
    conn: sqlite3.Connection, records: Sequence[MemoryRecord], vectors: Sequence[np.ndarray]
) -> tuple[list[InsertOutcome], dict[str, tuple[list[int], list[np.ndarray]]]]:
    """Insert ``records`` with one statement per table. A record is a duplicate (nothing written,
    the holder's id answered) when its ``(bank_id, idempotency_key)`` or its ``(bank_id,
    memory_id)`` is already in the file or earlier in the batch. Returns each record's outcome, and
    per bank the new chunk ids with their vectors. Raises before anything is committed when a
    text is not valid Unicode; the caller's transaction rolls the batch back."""
    taken = find_keys(conn, [(r.bank_id, key) for r in records if (key := r.idempotency_key) is not None])
    outcomes: list[InsertOutcome] = []
    fresh: list[tuple[int, MemoryRecord, np.ndarray]] = []
    for record, matrix in zip(records, vectors, strict=True):
        if record.idempotency_key is not None:
            scoped = (record.bank_id, record.idempotency_key)
            if scoped in taken:
                outcomes.append(InsertOutcome(memory_id=taken[scoped], deduplicated=True))
                continue
            taken[scoped] = record.memory_id  # a later record of this batch with the key is a duplicate
        fresh.append((len(outcomes), record, matrix))
        outcomes.append(InsertOutcome(memory_id=record.memory_id, deduplicated=False))
    # Memory ids are fresh UUIDs from the engine: look them up only when one turns out taken.
    conn.execute("SAVEPOINT insert_rows")
    try:
        try:
            added = _insert_rows(conn, [(record, matrix) for _, record, matrix in fresh])
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO insert_rows")
            fresh = _without_held_ids(conn, fresh, outcomes)
            added = _insert_rows(conn, [(record, matrix) for _, record, matrix in fresh])
    except UnicodeEncodeError as exc:
        record = next(r for _, r, _ in fresh if not _encodable(r))
        raise ValidationError(
            f"memory {record.memory_id!r} holds text that is not valid Unicode ({exc.reason})",
            code="text_not_unicode",
        ) from None
    conn.execute("RELEASE insert_rows")
    return outcomes, added


def _without_held_ids(
    conn: sqlite3.Connection,
    fresh: list[tuple[int, MemoryRecord, np.ndarray]],
    outcomes: list[InsertOutcome],
) -> list[tuple[int, MemoryRecord, np.ndarray]]:
    """``fresh`` minus the records whose memory id the file or an earlier record of the batch
    holds; their outcomes become duplicates."""
    kept: list[tuple[int, MemoryRecord, np.ndarray]] = []
    seen: set[tuple[str, str]] = set()
    for position, record, matrix in fresh:
        scoped = (record.bank_id, record.memory_id)
        held = (
            scoped in seen
            or conn.execute("SELECT 1 FROM memories WHERE bank_id = ? AND memory_id = ?", scoped).fetchone()
        )
        if held:
            outcomes[position] = InsertOutcome(memory_id=record.memory_id, deduplicated=True)
        else:
            kept.append((position, record, matrix))
            seen.add(scoped)
    return kept


def find_keys(conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``(bank_id, idempotency_key) -> memory_id`` for those of ``keys`` already in the file (one
    indexed statement per bank)."""
    wanted: dict[str, list[str]] = {}
    for bank_id, key in keys:
        wanted.setdefault(bank_id, []).append(key)
    found: dict[tuple[str, str], str] = {}
    for bank_id, bank_keys in wanted.items():
        rows = conn.execute(
            "SELECT idempotency_key, memory_id FROM memories WHERE bank_id = ? "
            "AND idempotency_key IN (SELECT value FROM json_each(?))",
            (bank_id, json.dumps(bank_keys)),
        )
        found.update(((bank_id, key), memory_id) for key, memory_id in rows)
    return found


def _insert_rows(
    conn: sqlite3.Connection, batch: list[tuple[MemoryRecord, np.ndarray]]
) -> dict[str, tuple[list[int], list[np.ndarray]]]:
    """One ``executemany`` per table, with row ids chosen here (the caller holds the write lock),
    so no statement has to run per row to learn its id."""
    memory_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM memories").fetchone()[0]
    # chunks is AUTOINCREMENT: ids never reused, so start past the highest ever handed out.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
    chunk_id = max(
        row[0] if row else 0, conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
    )
    memories: list[tuple[Any, ...]] = []
    tags: list[tuple[int, str, str]] = []
    chunks: list[tuple[Any, ...]] = []
    added: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    encode = _RowEncoder()
    for record, matrix in batch:
        memory_id += 1
        unique_tags = list(dict.fromkeys(record.tags)) if record.tags else []
        memories.append(encode.memory(memory_id, record, unique_tags))
        if unique_tags:
            tags.extend((memory_id, record.bank_id, tag) for tag in unique_tags)
        token = encode.bank_token(record.bank_id)
        keys, rows = added.setdefault(record.bank_id, ([], []))
        for chunk, vector in zip(record.chunks, matrix, strict=True):
            chunk_id += 1
            embedding = vector.tobytes()
            chunks.append(
                (
                    chunk_id,
                    memory_id,
                    record.bank_id,
                    chunk.index,
                    chunk.text,
                    token,
                    embedding,
                    text_hash(chunk.text),
                    vector_hash(embedding),
                )
            )
            keys.append(chunk_id)
        rows.append(matrix)
    conn.executemany(
        "INSERT INTO memories (id, memory_id, bank_id, text, tags, metadata, occurred_at, retained_at, "
        "event_us, retained_us, source, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        memories,
    )
    if tags:
        conn.executemany("INSERT INTO memory_tags (memory, bank_id, tag) VALUES (?, ?, ?)", tags)
    conn.executemany(
        "INSERT INTO chunks (id, memory, bank_id, chunk_index, text, bank_key, embedding, text_hash, "
        "vector_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        chunks,
    )
    if chunks and not _fts_trigger(conn):
        conn.execute(
            "INSERT INTO chunks_fts (rowid, text, bank_key) "
            "SELECT id, text, bank_key FROM chunks WHERE id >= ?",
            (chunks[0][0],),
        )
    return added


def _fts_trigger(conn: sqlite3.Connection) -> bool:
    """Whether the file keeps FTS rows in step by the trigger older versions created (see
    ``_sqlite_schema``); asked per batch, since such a process may open the file at any time."""
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'chunks_fts_insert'"
        ).fetchone()
        is not None
    )


class _RowEncoder:
    """Column values of a batch's rows. The records of one retain batch share their retained-at
    moment and usually their bank, so those encodings are computed once, not per row."""

    def __init__(self) -> None:
        self._moment: datetime | None = None
        self._moment_text = ""
        self._moment_us = 0
        self._tokens: dict[str, str] = {}

    def bank_token(self, bank_id: str) -> str:
        token = self._tokens.get(bank_id)
        if token is None:
            token = self._tokens[bank_id] = bank_key(bank_id)
        return token

    def memory(self, row_id: int, record: MemoryRecord, tags: list[str]) -> tuple[Any, ...]:
        retained = record.retained_at
        if retained is not self._moment:
            self._moment, self._moment_text, self._moment_us = (
                retained,
                retained.isoformat(),
                micros(retained),
            )
        occurred = record.occurred_at
        return (
            row_id,
            record.memory_id,
            record.bank_id,
            record.text,
            json.dumps(tags) if tags else "[]",
            _metadata_json(record.metadata) if record.metadata else "{}",
            occurred.isoformat() if occurred else None,
            self._moment_text,
            micros(occurred) if occurred else self._moment_us,
            self._moment_us,
            record.source,
            record.idempotency_key,
        )


def _encodable(record: MemoryRecord) -> bool:
    """Whether every text of ``record`` can be stored as UTF-8 (a lone surrogate cannot)."""
    texts = [record.text, record.source or "", record.idempotency_key or "", *record.tags]
    texts += [chunk.text for chunk in record.chunks]
    texts.append(_metadata_json(record.metadata))
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
