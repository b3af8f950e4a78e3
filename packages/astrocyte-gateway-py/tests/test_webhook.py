"""POST /v1/ingest/webhook/{source_id}: verified by the core, exempt from user auth, retained as the
source's principal; replays (on any replica), stale timestamps, bad signatures and bad bodies are
refused with a 4xx and a stable code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from astrocyte import Astrocyte, AstrocyteContext
from astrocyte.ingest.webhook import sign
from conftest import assert_error, serve
from fastapi import FastAPI

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
ENV = {
    "ASTROCYTE_AUTH_MODE": "api_key",
    "ASTROCYTE_API_KEYS": json.dumps({"reader-key-0123456789": "agent:reader"}),
}


def signed(body: bytes, delivery: str, timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers, as a sender computes them."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, body, ts, delivery),
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
        "/v1/recall",
        json={"query": "build failed", "bank_id": "inbox"},
        headers={"X-API-Key": "reader-key-0123456789"},
    )
    assert found.json()["hits"][0]["text"] == "build 42 failed on main"


async def _memory_count(engine: Astrocyte) -> int:
    return (await engine.bank_stats("inbox", context=AstrocyteContext(principal="agent:reader"))).memory_count


async def _driver_started(app: FastAPI) -> None:
    for _ in range(200):
        if app.state.gateway.supervisor.driver("hooks") is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the webhook source did not start")


async def test_replay_on_another_replica_under_any_headers_stores_nothing() -> None:
    # Two gateway apps (replicas) over one store: nothing but the store remembers the delivery.
    async with Astrocyte.from_dict(CONFIG) as engine:
        async with serve(ENV, engine) as (first, app1), serve(ENV, engine) as (second, app2):
            await _driver_started(app1)
            await _driver_started(app2)
            body = json.dumps({"content": "deploy finished"}).encode()
            headers = signed(body, "msg_replay")
            stored = await first.post("/v1/ingest/webhook/hooks", content=body, headers=headers)
            assert stored.json()["status"] == "stored"
            replay = await second.post("/v1/ingest/webhook/hooks", content=body, headers=headers)
            assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
            assert replay.json()["memory_id"] == stored.json()["memory_id"]
            for forged in (
                {**headers, "webhook-id": "msg_new"},
                {k: v for k, v in headers.items() if k != "webhook-id"},
            ):
                refused = await second.post("/v1/ingest/webhook/hooks", content=body, headers=forged)
                assert_error(refused, 401, "webhook_signature_invalid")
            assert await _memory_count(engine) == 1


async def test_github_replay_under_a_new_delivery_id_stores_nothing(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "issue 12 closed"}).encode()
    headers = {"X-Hub-Signature-256": sign(SECRET, body), "content-type": "application/json"}
    outcomes = []
    for delivery in ("gh-1", "gh-1", "gh-forged"):  # the delivery, GitHub's redelivery, a replay
        response = await http.post(
            "/v1/ingest/webhook/hooks", content=body, headers={**headers, "X-GitHub-Delivery": delivery}
        )
        outcomes.append(response.json()["status"])
    assert outcomes == ["stored", "duplicate", "duplicate"]


BAD_BODIES = {
    "principal_not_a_string": b'{"content": "x", "principal": 7}',
    "deep_nesting": b'{"content": "x", "metadata": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
    "nan": b'{"content": "x", "metadata": {"v": NaN}}',
    "not_an_object": b"[1, 2]",
    "not_utf8": b"\xff\xfe",
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
async def test_signed_bad_bodies_are_400_with_a_stable_code(http: httpx.AsyncClient, name: str) -> None:
    await _wait_running(http)
    body = BAD_BODIES[name]
    response = await http.post("/v1/ingest/webhook/hooks", content=body, headers=signed(body, f"msg_{name}"))
    assert_error(response, 400, "webhook_payload_invalid")


async def test_webhook_takes_only_json(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "x"}).encode()
    headers = {**signed(body, "msg_text"), "content-type": "text/plain"}
    response = await http.post("/v1/ingest/webhook/hooks", content=body, headers=headers)
    assert_error(response, 415, "unsupported_media_type")


async def test_bad_signature_stale_timestamp_and_unknown_source(http: httpx.AsyncClient) -> None:
    await _wait_running(http)
    body = json.dumps({"content": "x"}).encode()
    forged = {**signed(body, "d-2"), "webhook-signature": "v1," + "A" * 44}
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
