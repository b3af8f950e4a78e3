"""Edge controls: body limit, CORS, admin token, per-client rate limit, trusted proxies."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from astrocyte import Astrocyte
from astrocyte_gateway.limiter import build_client_limiter, tracked_clients
from astrocyte_gateway.settings import Settings
from conftest import assert_error, serve

RECALL = {"query": "anything", "bank_id": "b"}


async def _chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


async def test_declared_body_over_the_limit_is_413(brain: Astrocyte) -> None:
    async with serve({"ASTROCYTE_MAX_REQUEST_BODY_BYTES": "200"}, brain) as (http, _):
        response = await http.post("/v1/retain", json={"content": "x" * 500, "bank_id": "b"})
        assert_error(response, 413, "request_too_large")
        ok = await http.post("/v1/retain", json={"content": "small", "bank_id": "b"})
        assert ok.status_code == 200


async def test_chunked_body_over_the_limit_is_413(brain: Astrocyte) -> None:
    async with serve({"ASTROCYTE_MAX_REQUEST_BODY_BYTES": "4096"}, brain) as (http, _):
        response = await http.post(
            "/v1/retain", content=_chunks(100_000), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "request_too_large")


async def test_chunked_body_under_the_limit_reaches_the_route(brain: Astrocyte) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"content": "streamed in pieces", '
        yield b'"bank_id": "b"}'

    async with serve({"ASTROCYTE_MAX_REQUEST_BODY_BYTES": "4096"}, brain) as (http, _):
        response = await http.post("/v1/retain", content=body(), headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text


async def test_cors_preflight_for_allowed_and_refused_origins(brain: Astrocyte) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    }
    async with serve({"ASTROCYTE_CORS_ORIGINS": "https://app.example.com"}, brain) as (http, _):
        allowed = await http.options("/v1/recall", headers={"Origin": "https://app.example.com", **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = await http.options("/v1/recall", headers={"Origin": "https://evil.example", **preflight})
        assert_error(refused, 403, "cors_origin_refused")
        assert "access-control-allow-origin" not in refused.headers
        simple = await http.get("/live", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
        simple = await http.get("/live", headers={"Origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"


async def test_cors_is_off_without_origins(client: httpx.AsyncClient) -> None:
    response = await client.get("/live", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


async def test_admin_routes_without_wrong_and_right_token(brain: Astrocyte) -> None:
    async with serve({"ASTROCYTE_ADMIN_TOKEN": "s3cret-admin"}, brain) as (http, _):
        for path in ("/v1/admin/sources", "/v1/admin/banks", "/v1/admin/limiter"):
            assert_error(await http.get(path), 401, "admin_token_missing")
            assert_error(await http.get(path, headers={"X-Admin-Token": "wrong"}), 403, "admin_token_invalid")
            assert (await http.get(path, headers={"X-Admin-Token": "s3cret-admin"})).status_code == 200


async def test_admin_routes_are_closed_when_no_token_is_configured(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.get("/v1/admin/banks", headers={"X-Admin-Token": "anything"}), 403, "admin_disabled"
    )


async def test_rate_limit_answers_429_with_retry_after_and_exempts_probes(brain: Astrocyte) -> None:
    env = {"ASTROCYTE_RATE_LIMIT_PER_SECOND": "0.1", "ASTROCYTE_RATE_LIMIT_BURST": "2"}
    async with serve(env, brain) as (http, _):
        await http.post("/v1/retain", json={"content": "x", "bank_id": "b"})
        await http.post("/v1/recall", json=RECALL)
        limited = await http.post("/v1/recall", json=RECALL)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        for probe in ("/live", "/health", "/health/ingest", "/metrics"):
            assert (await http.get(probe)).status_code == 200


async def test_forged_forwarded_for_from_untrusted_peer_does_not_change_the_key(brain: Astrocyte) -> None:
    env = {"ASTROCYTE_RATE_LIMIT_PER_SECOND": "0.1", "ASTROCYTE_RATE_LIMIT_BURST": "1"}
    async with serve(env, brain, client=("198.51.100.7", 4000)) as (http, _):
        assert (await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.1"})).status_code == 200
        # A new forged address each time must not buy a new budget.
        forged = await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.2"})
        assert_error(forged, 429, "rate_limited")


async def test_trusted_proxy_forwarded_for_is_the_client(brain: Astrocyte) -> None:
    env = {
        "ASTROCYTE_RATE_LIMIT_PER_SECOND": "0.1",
        "ASTROCYTE_RATE_LIMIT_BURST": "1",
        "ASTROCYTE_TRUSTED_PROXIES": "10.0.0.0/8",
    }
    async with serve(env, brain, client=("10.1.2.3", 4000)) as (http, _):
        first = await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.1, 10.9.9.9"})
        assert first.status_code == 200
        other_client = await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.2"})
        assert other_client.status_code == 200
        again = await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.1"})
        assert_error(again, 429, "rate_limited")


async def test_limiter_memory_stays_bounded_under_100k_clients() -> None:
    settings = Settings.from_env(
        {"ASTROCYTE_RATE_LIMIT_PER_SECOND": "5", "ASTROCYTE_RATE_LIMIT_MAX_CLIENTS": "1000"}
    )
    limiter = build_client_limiter(settings)
    assert limiter is not None
    for batch in range(100):
        await asyncio.gather(*(limiter.hit(f"10.{batch}.{i // 256}.{i % 256}", 5.0, 5) for i in range(1000)))
    assert tracked_clients(limiter) == 1000


def test_chunked_body_over_the_limit_is_413_on_a_real_server(
    gateway_process: Any, memory_config: Path
) -> None:
    gateway = gateway_process(
        {"ASTROCYTE_CONFIG_PATH": str(memory_config), "ASTROCYTE_MAX_REQUEST_BODY_BYTES": "4096"}
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/retain HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 1024
        with contextlib.suppress(OSError):  # the server may close once it has refused
            for _ in range(64):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        response = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):  # the server closes after the 413
                response += chunk
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"request_too_large" in response


async def test_admin_sees_every_bank_even_with_access_control_on() -> None:
    config = {"store": "memory", "embedder": "hashing", "access_control": {"enabled": True}}
    async with Astrocyte.from_dict(config) as engine:
        await engine.store.create_bank("private-bank")
        async with serve({"ASTROCYTE_ADMIN_TOKEN": "t"}, engine) as (http, _):
            assert (await http.get("/v1/banks")).json() == {"banks": []}  # dev user has no grant
            admin = await http.get("/v1/admin/banks", headers={"X-Admin-Token": "t"})
            assert [b["bank_id"] for b in admin.json()["banks"]] == ["private-bank"]
