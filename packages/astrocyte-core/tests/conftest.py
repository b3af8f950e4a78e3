"""Fixtures for the engine, config, embedder and LLM tests.

``brain`` runs each engine test against every built-in store that can run here: ``memory`` always,
``sqlite`` in a temporary file. The fake OpenAI server is one real HTTP server per session on
127.0.0.1, reset between tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from fixtures.engine import ENGINE_STORES, store_config
from fixtures.openai_server import FakeOpenAIServer


@pytest.fixture(params=ENGINE_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_brain(store_kind: str, tmp_path: Path) -> Iterator[Any]:
    """Build (not start) an engine over the parametrised store, with extra config keys merged in."""

    def make(**extra: Any) -> Astrocyte:
        return Astrocyte.from_dict({**store_config(store_kind, tmp_path), **extra})

    yield make


@pytest.fixture
async def brain(make_brain: Any) -> AsyncIterator[Astrocyte]:
    """A started engine with default settings over the parametrised store."""
    async with make_brain() as engine:
        yield engine


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(dimensions=32) as server:
        yield server


@pytest.fixture
def fake_openai(openai_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The session's fake OpenAI server with no scripted replies and no recorded requests."""
    openai_server.reset()
    yield openai_server
    openai_server.reset()
