"""Keyed memories ("one memory per external object") for the PostgreSQL store.

``memory_keys`` maps ``(bank_id, memory_key)`` to the memory that currently mirrors the object; its
foreign key cascades, so forgetting a memory (by id, tag, time or bank) drops its key row too. The
table is created on first use (under an advisory lock, so replicas racing to create it wait for
each other) instead of by a numbered migration: stores that never see a keyed write never get it.

Concurrent keyed writes of the same key serialise on a transaction-scoped advisory lock named after
``(schema, bank, key)``; locks are taken in sorted order, so two batches never deadlock on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import asyncpg  # type: ignore[import-untyped]

from astrocyte.errors import ValidationError
from astrocyte.stores._postgres_schema import lock_key
from astrocyte.types import InsertOutcome, MemoryRecord

__all__ = ["ensure_table", "forget_keys", "upsert_keyed"]

WriteRecords = Callable[[asyncpg.Connection, Sequence[MemoryRecord]], Awaitable[list[InsertOutcome]]]

_TABLE = """
CREATE TABLE IF NOT EXISTS memory_keys (
    bank_id text NOT NULL,
    memory_key text NOT NULL,
    memory_id text NOT NULL,
    PRIMARY KEY (bank_id, memory_key),
    FOREIGN KEY (bank_id, memory_id) REFERENCES memories (bank_id, memory_id) ON DELETE CASCADE
)
"""


async def ensure_table(conn: asyncpg.Connection, schema: str) -> None:
    """Create ``memory_keys`` in the connection's schema when absent (idempotent, replica-safe)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "memory_keys"))
        await conn.execute(_TABLE)


async def upsert_keyed(
    conn: asyncpg.Connection, schema: str, records: Sequence[MemoryRecord], write_records: WriteRecords
) -> list[InsertOutcome]:
    """Inside the caller's transaction: write each record as the one memory of its key (see the
    Store protocol). ``write_records`` is the store's own insert (idempotency and chunks)."""
    for record in records:
        if record.memory_key is None:
            raise ValidationError(
                "upsert_keyed needs a memory_key on every record", code="memory_key_missing"
            )
    names = sorted({f"{schema}|{r.bank_id}|{r.memory_key}" for r in records})
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(n, 0)) FROM unnest($1::text[]) n", names
    )
    outcomes: list[InsertOutcome] = []
    for record in records:
        taken = None
        if record.idempotency_key is not None:
            taken = await conn.fetchval(
                "SELECT memory_id FROM memories WHERE bank_id = $1 AND idempotency_key = $2",
                record.bank_id,
                record.idempotency_key,
            )
        if taken is not None:  # this version is stored already
            outcomes.append(InsertOutcome(str(taken), deduplicated=True))
            continue
        held = await conn.fetchval(
            "SELECT memory_id FROM memory_keys WHERE bank_id = $1 AND memory_key = $2",
            record.bank_id,
            record.memory_key,
        )
        if held is not None:
            # Chunks (and their HNSW and full-text entries) and the key row go by cascade.
            await conn.execute(
                "DELETE FROM memories WHERE bank_id = $1 AND memory_id = $2", record.bank_id, held
            )
            record = dataclasses.replace(record, memory_id=str(held))
        [outcome] = await write_records(conn, [record])
        await conn.execute(
            "INSERT INTO memory_keys (bank_id, memory_key, memory_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (bank_id, memory_key) DO UPDATE SET memory_id = EXCLUDED.memory_id",
            record.bank_id,
            record.memory_key,
            outcome.memory_id,
        )
        outcomes.append(InsertOutcome(outcome.memory_id, deduplicated=False))
    return outcomes


async def forget_keys(conn: asyncpg.Connection, bank_id: str, memory_keys: Sequence[str]) -> int:
    """Delete the memories held under ``memory_keys``; their key rows go by cascade."""
    deleted = await conn.fetchval(
        "WITH d AS (DELETE FROM memories m USING memory_keys k "
        "WHERE k.bank_id = $1 AND k.memory_key = ANY($2::text[]) "
        "AND m.bank_id = k.bank_id AND m.memory_id = k.memory_id RETURNING 1) SELECT count(*) FROM d",
        bank_id,
        list(memory_keys),
    )
    return int(deleted)
