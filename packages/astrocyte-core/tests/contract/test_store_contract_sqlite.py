"""The SQLite store (the embedded default) passes the store contract; a fresh file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from astrocyte.testing.store_contract import StoreContract


class TestSQLiteStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Any]:
        from astrocyte.stores.sqlite import SQLiteStore

        store = SQLiteStore({"path": str(tmp_path / "astrocyte.db")})
        await store.open()
        yield store
        await store.close()
