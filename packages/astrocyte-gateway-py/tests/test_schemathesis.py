"""Property-based API fuzzing: schemathesis generates requests for every operation of the OpenAPI
schema and sends them to a real uvicorn gateway; no response may be a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from astrocyte_gateway import Settings, create_app
from conftest import GatewayProcess
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

ADMIN_TOKEN = "fuzz-admin-token"
schema = schemathesis.openapi.from_dict(create_app(Settings.from_env({})).openapi())


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config: Path = tmp_path_factory.mktemp("fuzz") / "astrocyte.yaml"
    config.write_text("store: memory\nembedder: hashing\n", encoding="utf-8")
    env = {
        "ASTROCYTE_CONFIG_PATH": str(config),
        "ASTROCYTE_ADMIN_TOKEN": ADMIN_TOKEN,
        "ASTROCYTE_ACCESS_LOG": "false",
    }
    gateway = GatewayProcess(env)
    try:
        gateway.wait_ready()
        yield gateway.url
    finally:
        gateway.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case: schemathesis.Case, gateway_url: str) -> None:
    case.call_and_validate(
        base_url=gateway_url, headers={"X-Admin-Token": ADMIN_TOKEN}, checks=[not_a_server_error]
    )
