"""The in-process memory store passes the store contract (always runs, no services)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from astrocyte.errors import ConfigError, TooLargeError
from astrocyte.providers import STORES, build
from astrocyte.stores.memory import MemoryStore
from astrocyte.testing.store_contract import StoreContract, make_record
from astrocyte.types import SearchFilters


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore({})
        await store.open()
        yield store
        await store.close()


def test_memory_store_rejects_unknown_config_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        MemoryStore({"path": "/tmp/x"})
    assert "path" in caught.value.message


@pytest.mark.parametrize("limit", [0, -1, "10", True, 1.5])
def test_memory_store_rejects_a_bad_max_memories(limit: object) -> None:
    with pytest.raises(ConfigError):
        MemoryStore.validate_config({"max_memories": limit})


async def test_memory_store_refuses_inserts_beyond_max_memories() -> None:
    store = MemoryStore({"max_memories": 2})
    await store.insert([make_record("b", "one"), make_record("b", "two", idempotency_key="k")])
    (dup,) = await store.insert([make_record("b", "two again", idempotency_key="k")])
    assert dup.deduplicated, "a duplicate takes no room, so it is still answered"
    with pytest.raises(TooLargeError) as caught:
        await store.insert([make_record("b", "three")])
    assert caught.value.code == "store_full"
    assert await store.count(["b"], SearchFilters()) == 2


def test_memory_store_builds_from_the_entry_point() -> None:
    assert isinstance(build(STORES, "memory", {}), MemoryStore)
