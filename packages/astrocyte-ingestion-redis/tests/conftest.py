"""Fixtures: private redis-servers started by the tests (never the shared one: tests stop and kill
them), a fresh stream namespace per test, and an engine over the memory store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from astrocyte.testing import service_env
from astrocyte_ingestion_redis.testing import RedisServer
from redis.asyncio import Redis


@pytest.fixture(scope="session")
def redis_bin() -> str:
    return service_env("ASTROCYTE_TEST_REDIS_SERVER_BIN")


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


async def eventually(what: str, probe: Callable[[], bool | Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``probe`` (sync or async) until it is true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
