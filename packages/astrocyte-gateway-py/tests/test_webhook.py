"""POST /v1/ingest/webhook/{source_id}: verified by the core, exempt from user auth, retained as the
source's principal; replays, stale timestamps and bad signatures are refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from astrocyte import Astrocyte
from astrocyte.ingest.webhook import sign
from conftest import assert_error, serve

SECRET = "whsec-test-secret"
CONFIG = {
    "store": "memory",
    "embedder": "hashing",
    "access_control": {"enabled": True},
    "access_grants": [
        {"bank_id": "inbox", "principal": "service:hooks", "permissions": ["write"]},
        {"bank_id": "inbox", "principal": "agent:reader", "permissions": ["read"]},
    ],
    "sources": {
        "hooks": {
            "type": "stream",
            "driver": "astrocyte.ingest.webhook:WebhookDriver",
            "principal": "service:hooks",
            "bank_id": "inbox",
            "secrets": [SECRET],
        }
    },
}
ENV = {"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": json.dumps({"reader-key": "agent:reader"})}


def signed(body: bytes, delivery: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Astrocyte-Timestamp": str(ts),
        "X-Astrocyte-Signature": sign(SECRET, body, ts),
        "X-Astrocyte-Delivery": delivery,
        "content-type": "application/json",
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with Astrocyte.from_dict(CONFIG) as engine, serve(ENV, engine) as (client, _):
        yield client


async def _wait_running(http: httpx.AsyncClient) -> None:
    for _ in range(100):
        if (await http.get("/health/ingest")).status_code == 200:
            return
        await asyncio.sleep(0.05)


async def test_signed_delivery_is_retained_as_the_source_principal(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "build 42 failed on main"}).encode()
    response = await http.post("/v1/ingest/webhook/hooks", content=body, headers=signed(body, "d-1"))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    found = await http.post(
        "/v1/recall", json={"query": "build failed", "bank_id": "inbox"}, headers={"X-API-Key": "reader-key"}
    )
    assert found.json()["hits"][0]["text"] == "build 42 failed on main"


async def test_replayed_delivery_is_refused(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "deploy finished"}).encode()
    headers = signed(body, "d-replay")
    assert (await http.post("/v1/ingest/webhook/hooks", content=body, headers=headers)).status_code == 200
    replay = await http.post("/v1/ingest/webhook/hooks", content=body, headers=headers)
    assert_error(replay, 401, "webhook_replayed")


async def test_bad_signature_stale_timestamp_and_unknown_source(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "x"}).encode()
    forged = {**signed(body, "d-2"), "X-Astrocyte-Signature": "sha256=" + "0" * 64}
    assert_error(
        await http.post("/v1/ingest/webhook/hooks", content=body, headers=forged),
        401,
        "webhook_signature_invalid",
    )
    stale = signed(body, "d-3", timestamp=int(time.time()) - 3600)
    assert_error(
        await http.post("/v1/ingest/webhook/hooks", content=body, headers=stale),
        401,
        "webhook_timestamp_stale",
    )
    unknown = await http.post("/v1/ingest/webhook/nope", content=body, headers=signed(body, "d-4"))
    assert_error(unknown, 404, "webhook_source_not_found")
    bad_payload = b'{"no_content": 1}'
    assert_error(
        await http.post("/v1/ingest/webhook/hooks", content=bad_payload, headers=signed(bad_payload, "d-5")),
        400,
    )
