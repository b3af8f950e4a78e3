"""Fixtures for the policy tests: a real Redis from ``ASTROCYTE_TEST_REDIS_URL``.

Unset, Redis-backed tests skip locally and fail under ``CI`` (a missing service is a failure there).
"""

from __future__ import annotations

import uuid

import pytest
from astrocyte.testing import service_env

REDIS_URL_VAR = "ASTROCYTE_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis server."""
    return service_env(REDIS_URL_VAR)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to one test, so runs never see each other's counters."""
    return f"astrocyte-test:{uuid.uuid4().hex[:12]}:"
