"""Keyed memories ("one memory per external object") for the SQLite store's writer thread.

``memory_keys`` maps ``(bank_id, memory_key)`` to the memory id that currently mirrors the object.
A row whose memory is gone (forgotten by id, bank deleted) is ignored by the join and overwritten by
the next keyed write. Every function runs inside the writer's ``BEGIN IMMEDIATE`` transaction, so
a replace (delete the old memory, insert the new version under its id) is atomic also across
processes sharing the file.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

import numpy as np

from astrocyte.errors import ValidationError
from astrocyte.stores import _sqlite_writes as writes
from astrocyte.types import InsertOutcome, MemoryRecord

__all__ = ["SCHEMA", "forget_keys", "upsert_keyed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_keys (
    bank_id TEXT NOT NULL, memory_key TEXT NOT NULL, memory_id TEXT NOT NULL,
    PRIMARY KEY (bank_id, memory_key)
) WITHOUT ROWID;
"""

Added = dict[str, tuple[list[int], list[np.ndarray]]]


def _held(conn: sqlite3.Connection, bank_id: str, memory_key: str) -> tuple[int, str] | None:
    """``(row id, memory id)`` of the memory held under the key, when it still exists."""
    row = conn.execute(
        "SELECT m.id, m.memory_id FROM memory_keys k JOIN memories m "
        "ON m.bank_id = k.bank_id AND m.memory_id = k.memory_id "
        "WHERE k.bank_id = ? AND k.memory_key = ?",
        (bank_id, memory_key),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def upsert_keyed(
    conn: sqlite3.Connection, records: Sequence[MemoryRecord], vectors: Sequence[np.ndarray]
) -> tuple[list[InsertOutcome], Added, list[tuple[str, list[int]]]]:
    """Write each record as the one memory of its ``(bank_id, memory_key)``. Returns the outcomes,
    the chunk ids added per bank (with their vectors) and the chunk ids removed per bank, for the
    caller to apply to the vector index after COMMIT."""
    outcomes: list[InsertOutcome] = []
    added: Added = {}
    removed: list[tuple[str, list[int]]] = []
    for record, matrix in zip(records, vectors, strict=True):
        key = record.memory_key
        if key is None:
            raise ValidationError(
                "upsert_keyed needs a memory_key on every record", code="memory_key_missing"
            )
        writes.ensure_bank(conn, record.bank_id)
        if record.idempotency_key is not None:
            taken = writes.find_keys(conn, [(record.bank_id, record.idempotency_key)])
            if taken:  # this version is stored already
                outcomes.append(InsertOutcome(next(iter(taken.values())), deduplicated=True))
                continue
        held = _held(conn, record.bank_id, key)
        if held is not None:
            _, chunk_ids = writes.delete_memories(conn, "m.id = ?", [held[0]])
            removed.append((record.bank_id, chunk_ids))
            record = dataclasses.replace(record, memory_id=held[1])
        [outcome], fresh = writes.insert_records(conn, [record], [matrix])
        for bank_id, (keys, rows) in fresh.items():
            into = added.setdefault(bank_id, ([], []))
            into[0].extend(keys)
            into[1].extend(rows)
        conn.execute(
            "INSERT INTO memory_keys (bank_id, memory_key, memory_id) VALUES (?, ?, ?) "
            "ON CONFLICT (bank_id, memory_key) DO UPDATE SET memory_id = excluded.memory_id",
            (record.bank_id, key, outcome.memory_id),
        )
        outcomes.append(InsertOutcome(outcome.memory_id, deduplicated=False))
    return outcomes, added, removed


def forget_keys(conn: sqlite3.Connection, bank_id: str, memory_keys: Sequence[str]) -> tuple[int, list[int]]:
    """Delete the memories held under ``memory_keys`` in ``bank_id`` and their key rows; returns
    how many memories went and their chunk ids."""
    if not memory_keys:
        return 0, []
    marks = ",".join("?" * len(memory_keys))
    where = (
        f"m.bank_id = ? AND m.memory_id IN (SELECT memory_id FROM memory_keys "
        f"WHERE bank_id = ? AND memory_key IN ({marks}))"
    )
    deleted, chunk_ids = writes.delete_memories(conn, where, [bank_id, bank_id, *memory_keys])
    conn.execute(
        f"DELETE FROM memory_keys WHERE bank_id = ? AND memory_key IN ({marks})", [bank_id, *memory_keys]
    )
    return deleted, chunk_ids
