"""Fixtures: a local GitHub-compatible server, engines over real stores, and driver builders."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from astrocyte import Astrocyte
from astrocyte.ingest.sink import IngestSink, Outcome
from astrocyte.testing._helpers import service_env
from astrocyte_ingestion_github.config import GitHubSourceConfig
from astrocyte_ingestion_github.driver import GitHubIssuesDriver
from astrocyte_ingestion_github.testing import FakeGitHub

TOKEN = "ghp_testtoken"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    server = FakeGitHub(token=TOKEN)
    await server.start()
    yield server
    await server.stop()


def _sqlite(tmp_path: Path) -> dict[str, Any]:
    return {"store": "sqlite", "store_config": {"path": str(tmp_path / "astrocyte.db")}}


@pytest.fixture(params=["sqlite", "postgres"])
async def engine_config(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Engine config over a real store: a SQLite file, or PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        yield _sqlite(tmp_path)
        return
    dsn = service_env("ASTROCYTE_TEST_POSTGRES_DSN")
    schema = f"astrocyte_github_{uuid.uuid4().hex[:10]}"
    yield {"store": "postgres", "store_config": {"dsn": dsn, "schema": schema}}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def engine(engine_config: dict[str, Any]) -> AsyncIterator[Astrocyte]:
    async with Astrocyte.from_dict(engine_config) as brain:
        yield brain


class CountingSink(IngestSink):
    """The core's sink, counting outcomes by status (and forgets)."""

    def __init__(self, brain: Astrocyte, source_id: str = "gh") -> None:
        super().__init__(brain, source_id=source_id)
        self.counts: dict[str, int] = {}
        self.submitted = 0

    async def submit(self, batch: Any) -> list[Outcome]:
        outcomes = await super().submit(batch)
        self.submitted += len(batch)
        for outcome in outcomes:
            name = outcome.code if outcome.code == "forgotten" else outcome.status
            self.counts[name] = self.counts.get(name, 0) + 1
        return outcomes


@pytest.fixture
def make_driver(github: FakeGitHub) -> Callable[..., GitHubIssuesDriver]:
    def make(sink: IngestSink, repo: str = "octo/hello", **overrides: Any) -> GitHubIssuesDriver:
        mapping = {
            "repositories": [repo],
            "api_url": github.url,
            "token": TOKEN,
            "interval_seconds": 0.2,
            "lease_seconds": 5,
            **overrides,
        }
        mapping = {k: v for k, v in mapping.items() if v is not None or k != "token"}
        return GitHubIssuesDriver(sink.source_id, GitHubIssuesDriver.validate_config(mapping), sink=sink)

    return make


def config(**keys: Any) -> GitHubSourceConfig:
    return GitHubSourceConfig.model_validate({"repositories": ["octo/hello"], "token": TOKEN, **keys})


async def eventually(what: str, predicate: Callable[[], Any], within: float = 20.0) -> None:
    """Wait until ``predicate()`` (plain or awaitable) is true; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
