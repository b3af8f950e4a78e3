"""Fixtures for the ingestion tests: a real engine over the memory store, a private metrics
registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from prometheus_client import CollectorRegistry


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def memory_brain() -> AsyncIterator[Astrocyte]:
    async with Astrocyte.from_dict({"store": "memory"}) as engine:
        yield engine


@pytest.fixture
def make_memory_brain() -> Any:
    """Build (not start) an engine over the memory store with extra config keys."""

    def make(**extra: Any) -> Astrocyte:
        return Astrocyte.from_dict({"store": "memory", **extra})

    return make
