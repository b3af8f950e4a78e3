"""Fixtures: private redis-servers started by the tests (never the shared one: tests stop and kill
them), a fresh stream namespace per test, and an engine over the memory store."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from astrocyte_ingestion_redis.testing import RedisServer
from redis.asyncio import Redis


def need_service(variable: str) -> str:
    """The value of ``variable``; skip locally when unset, fail under CI."""
    value = os.environ.get(variable)
    if not value:
        if os.environ.get("CI"):
            pytest.fail(f"{variable} is not set: this test needs the service in CI")
        pytest.skip(f'{variable} is not set (eval "$(scripts/services env)" after scripts/services up redis)')
    return value


@pytest.fixture(scope="session")
def redis_bin() -> str:
    return need_service("ASTROCYTE_TEST_REDIS_SERVER_BIN")


@pytest.fixture(scope="session")
def redis_server(redis_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private server shared by the tests that do not stop it."""
    server = RedisServer(redis_bin, tmp_path_factory.mktemp("redis-shared"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(redis_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A private server for one test, which may stop, kill and restart it."""
    server = RedisServer(redis_bin, tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def stream() -> str:
    return f"events-{uuid.uuid4().hex[:10]}"
