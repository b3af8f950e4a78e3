"""Fixtures: the shared test broker (tests that stop it use ``$ASTROCYTE_TEST_SERVICES_SCRIPT``),
a unique topic and group name per test, and polling helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from astrocyte.testing import service_env


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return service_env("ASTROCYTE_TEST_KAFKA_BOOTSTRAP")


@pytest.fixture
def name() -> str:
    """A unique topic (and group) name for one test."""
    return f"t-{uuid.uuid4().hex[:12]}"


async def eventually(what: str, probe: Callable[[], bool | Awaitable[bool]], within: float = 30.0) -> None:
    """Poll ``probe`` (sync or async) until it is true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
