"""Leases and keyed memories are atomic across store instances sharing one backend (two
connections to one SQLite file, two pools on one PostgreSQL schema), as replicas are."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from astrocyte.stores.postgres import PostgresStore
from astrocyte.stores.sqlite import SQLiteStore
from astrocyte.testing._helpers import make_record, service_env, unique_bank
from astrocyte.types import SearchFilters


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Any]]:
    schema = f"astrocyte_state_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        made: list[Any] = [SQLiteStore({"path": str(tmp_path / "shared.db")}) for _ in range(3)]
    else:
        dsn = service_env("ASTROCYTE_TEST_POSTGRES_DSN")
        made = [PostgresStore({"dsn": dsn, "schema": schema}) for _ in range(3)]
    for store in made:
        await store.open()
    yield made
    for store in made:
        await store.close()
    if request.param == "postgres":
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_one_holder_wins_a_lease_raced_from_several_instances(stores: list[Any]) -> None:
    name = unique_bank("lease")
    tries = [stores[i % len(stores)].try_lease(name, f"replica-{i}", 30) for i in range(15)]
    won = await asyncio.gather(*tries)
    assert sum(won) == 1
    holder = f"replica-{won.index(True)}"
    assert all([await store.try_lease(name, holder, 30) for store in stores])
    assert await stores[0].release_lease(name, holder) is True
    assert await stores[1].try_lease(name, "replica-new", 30) is True


async def test_keyed_versions_raced_from_several_instances_leave_one_memory(stores: list[Any]) -> None:
    bank = unique_bank("keyed")
    versions = [
        dataclasses.replace(make_record(bank, f"shared edit {i}", idempotency_key=f"v{i}"), memory_key="obj")
        for i in range(12)
    ]
    results = await asyncio.gather(
        *(stores[i % len(stores)].upsert_keyed([v]) for i, v in enumerate(versions))
    )
    assert len({outcome.memory_id for [outcome] in results}) == 1
    for store in stores:
        assert await store.count([bank], SearchFilters()) == 1
    assert await stores[2].forget_keys(bank, ["obj"]) == 1
    assert await stores[0].count([bank], SearchFilters()) == 0
