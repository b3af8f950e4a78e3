"""The core's ingest driver contract kit, run against the redis driver on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from astrocyte.testing.ingest_contract import (
    ContractSettings,
    IngestDriverContract,
    IngestHarness,
)
from astrocyte_ingestion_redis.testing import RedisHarness, RedisServer


@pytest.fixture(scope="module")
def contract_server(redis_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_bin, tmp_path_factory.mktemp("redis-contract"))
    server.start()
    yield server
    server.stop()


class TestRedisDriverPassesTheContract(IngestDriverContract):
    contract_settings = ContractSettings(timeout=30.0)

    @pytest.fixture
    def harness(self, contract_server: RedisServer) -> IngestHarness:
        return RedisHarness(contract_server)
