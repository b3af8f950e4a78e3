"""Shared fixtures for the store contract suites: real services from the environment.

A suite that needs a service and finds its variable unset skips locally and fails under ``CI``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from astrocyte.testing._helpers import missing_service

POSTGRES_DSN_VAR = "ASTROCYTE_TEST_POSTGRES_DSN"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The test PostgreSQL server (with pgvector) to run against."""
    dsn = os.environ.get(POSTGRES_DSN_VAR)
    if not dsn:
        missing_service(f"{POSTGRES_DSN_VAR} is not set; no PostgreSQL to test against")
    return dsn


@pytest.fixture(scope="session")
async def postgres_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A schema name unique to this run, dropped (with everything in it) afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"astrocyte_contract_{uuid.uuid4().hex[:12]}"
    yield schema
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
