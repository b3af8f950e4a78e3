"""The sink applies 10,000 messages carrying 20% duplicate keys over concurrent batches, and the
store ends with exactly one memory per unique key (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from astrocyte.brain import Astrocyte
from astrocyte.ingest.sink import IngestMessage, IngestSink
from astrocyte.testing._helpers import missing_service

TOTAL = 10_000
UNIQUE = 8_000  # the other 2,000 (20%) repeat a key already sent
BATCH = 250
CONCURRENCY = 8


@pytest.fixture(params=["sqlite", "postgres"])
async def store_brain(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Astrocyte]:
    if request.param == "sqlite":
        config = {"store": "sqlite", "store_config": {"path": str(tmp_path / "ingest.db")}}
        async with Astrocyte.from_dict(config) as brain:
            yield brain
        return
    dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    if not dsn:
        missing_service("ASTROCYTE_TEST_POSTGRES_DSN is not set; no PostgreSQL to test against")
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"astrocyte_ingest_{uuid.uuid4().hex[:10]}"
    try:
        async with Astrocyte.from_dict(
            {"store": "postgres", "store_config": {"dsn": dsn, "schema": schema}}
        ) as brain:
            yield brain
    finally:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


def messages(bank: str) -> list[IngestMessage]:
    rng = random.Random(7)
    keys = [f"evt-{i}" for i in range(UNIQUE)]
    repeats = [rng.choice(keys) for _ in range(TOTAL - UNIQUE)]
    order = keys + repeats
    rng.shuffle(order)
    return [IngestMessage(idempotency_key=k, content=f"event {k} happened", bank_id=bank) for k in order]


@pytest.mark.timeout(300)
async def test_ten_thousand_messages_with_duplicates_leave_one_memory_per_key(store_brain: Astrocyte) -> None:
    bank = f"ingest-dedup-{uuid.uuid4().hex[:8]}"
    sink = IngestSink(store_brain, source_id="dedup")
    batch_list = [*messages(bank)]
    batches = [batch_list[i : i + BATCH] for i in range(0, TOTAL, BATCH)]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def submit(batch: list[IngestMessage]) -> list[tuple[str, str, str | None]]:
        async with gate:
            outcomes = await sink.submit(batch)
        return [(m.idempotency_key, o.status, o.memory_id) for m, o in zip(batch, outcomes, strict=True)]

    results = [row for rows in await asyncio.gather(*(submit(b) for b in batches)) for row in rows]

    statuses = Counter(status for _, status, _ in results)
    assert statuses == {"stored": UNIQUE, "duplicate": TOTAL - UNIQUE}
    ids_by_key: dict[str, set[str | None]] = {}
    for key, _, memory_id in results:
        ids_by_key.setdefault(key, set()).add(memory_id)
    assert all(len(ids) == 1 and None not in ids for ids in ids_by_key.values())
    assert len({next(iter(ids)) for ids in ids_by_key.values()}) == UNIQUE
    assert (await store_brain.bank_stats(bank)).memory_count == UNIQUE
