"""Property-based API fuzzing: schemathesis generates requests for every operation of the OpenAPI
schema and sends them to a real uvicorn gateway; no response may be a 5xx. Webhook deliveries are
signed (Standard Webhooks form) for a configured source, so the generated bodies reach the parser."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from astrocyte.ingest.webhook import sign
from astrocyte_gateway import Settings, create_app
from conftest import GatewayProcess
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet

ADMIN_TOKEN = "fuzz-admin-token"
HOOK_SECRET = "fuzz-hook-secret"
WEBHOOK_PATH = "/v1/ingest/webhook/{source_id}"
CONFIG = f"""store: memory
embedder: hashing
sources:
  hooks:
    type: stream
    driver: astrocyte.ingest.webhook:WebhookDriver
    bank_id: inbox
    secrets: [{HOOK_SECRET}]
"""
schema = schemathesis.openapi.from_dict(create_app(Settings.from_env({})).openapi())


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config: Path = tmp_path_factory.mktemp("fuzz") / "astrocyte.yaml"
    config.write_text(CONFIG, encoding="utf-8")
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
    if case.operation.path == WEBHOOK_PATH:
        _signed_delivery(case, gateway_url)
        return
    case.call_and_validate(
        base_url=gateway_url, headers={"X-Admin-Token": ADMIN_TOKEN}, checks=[not_a_server_error]
    )


def _signed_delivery(case: schemathesis.Case, gateway_url: str) -> None:
    """The generated body, signed for the configured source (a generated source id is a 404)."""
    body = b"" if isinstance(case.body, NotSet) else case.body
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    delivery, timestamp = f"msg_{time.monotonic_ns()}", int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(HOOK_SECRET, raw, timestamp, delivery),
    }
    for source_id in ("hooks", case.path_parameters.get("source_id") or "x"):
        response = httpx.post(f"{gateway_url}/v1/ingest/webhook/{source_id}", content=raw, headers=headers)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.json()["code"], response.text  # a stable code with every refusal
