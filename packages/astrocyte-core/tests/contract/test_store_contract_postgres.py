"""The PostgreSQL store passes the store contract, in a schema unique to this run.

Needs ``ASTROCYTE_TEST_POSTGRES_DSN`` (a server with pgvector): skipped locally without it, a
failure under ``CI``. Every test opens its own store on the run's schema; the kit's checks use
random bank names, so sharing the schema is safe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from astrocyte.testing.store_contract import StoreContract


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, postgres_dsn: str, postgres_schema: str) -> AsyncIterator[Any]:
        from astrocyte.stores.postgres import PostgresStore

        store = PostgresStore({"dsn": postgres_dsn, "schema": postgres_schema})
        await store.open()
        yield store
        await store.close()
