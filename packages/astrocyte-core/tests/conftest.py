"""Fixtures for the engine, config, embedder and LLM tests.

``brain`` runs each engine test against every built-in store that can run here: ``memory`` always,
``sqlite`` in a temporary file. The fake OpenAI server is one real HTTP server per session on
127.0.0.1, reset between tests.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from fixtures.openai_server import FakeOpenAIServer

ENGINE_STORES = ["memory", "sqlite"]


def store_config(kind: str, tmp_path: Path) -> dict[str, Any]:
    """The config mapping that selects ``kind`` as the store."""
    if kind == "sqlite":
        if importlib.util.find_spec("astrocyte.stores.sqlite") is None:
            if os.environ.get("CI"):
                pytest.fail("the sqlite store is missing (astrocyte.stores.sqlite)")
            pytest.skip("the sqlite store has not landed yet")
        return {"store": "sqlite", "store_config": {"path": str(tmp_path / "astrocyte.db")}}
    return {"store": kind}


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
