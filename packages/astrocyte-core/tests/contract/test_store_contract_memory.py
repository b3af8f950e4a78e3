"""The in-process memory store passes the store contract (always runs, no services)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from astrocyte.stores.memory import MemoryStore
from astrocyte.testing.store_contract import StoreContract


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore({})
        await store.open()
        yield store
        await store.close()
