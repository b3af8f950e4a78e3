"""The holes of the black-box attack runs, each closed: forwarded-for walking, token-chosen principal
kinds, oversized and ambiguous identity headers, bodies that lie, open /metrics, forged authority
tiers, cross-site and rebinding requests to the dev mode, Host-built redirects, /health internals,
and authentication without isolation."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from astrocyte import Astrocyte
from astrocyte.errors import ConfigError
from astrocyte_gateway import Settings, create_app
from conftest import MEMORY_CONFIG, assert_error, serve

KEY_ALICE, KEY_BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
KEY_SERVICE = "chat-key-0123456789abcdef"
API_KEYS = {
    KEY_ALICE: "user:alice",
    KEY_BOB: "user:bob",
    KEY_SERVICE: {"principal": "service:chat", "trusted_service": True},
}
API_ENV = {"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": json.dumps(API_KEYS)}
RECALL = {"query": "x", "bank_id": "b"}


# -- 13.2 client IP: walked from the right -----------------------------------------------------


def _limited_env(**extra: str) -> dict[str, str]:
    return {
        "ASTROCYTE_RATE_LIMIT_PER_SECOND": "0.1",
        "ASTROCYTE_RATE_LIMIT_BURST": "1",
        "ASTROCYTE_TRUSTED_PROXIES": "10.0.0.0/8",
        **extra,
    }


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded"])
async def test_a_prefixed_hop_does_not_escape_the_limiter(brain: Astrocyte, header: str) -> None:
    # The proxy (10.1.2.3) appends the client it saw (203.0.113.9) to whatever the client sent.
    def chain(forged: str, client: str = "203.0.113.9") -> str:
        if header == "Forwarded":
            return f'for={forged}, for="{client}:5555";proto=https'
        return f"{forged}, {client}"

    async with serve(_limited_env(), brain, client=("10.1.2.3", 4000)) as (http, _):
        assert (await http.get("/v1/banks", headers={header: chain("198.51.100.1")})).status_code == 200
        forged = await http.get("/v1/banks", headers={header: chain("198.51.100.2")})
        assert_error(forged, 429, "rate_limited")
        # Another client behind the same proxy has its own budget.
        other = await http.get("/v1/banks", headers={header: chain("198.51.100.1", client="203.0.113.10")})
        assert other.status_code == 200


async def test_trusted_hops_are_skipped_from_the_right(brain: Astrocyte) -> None:
    async with serve(_limited_env(), brain, client=("10.1.2.3", 4000)) as (http, _):
        # client, then two trusted proxies: the client is the rightmost untrusted hop.
        assert (
            await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.5, 10.0.0.7"})
        ).status_code == 200
        again = await http.get("/v1/banks", headers={"X-Forwarded-For": "203.0.113.5"})
        assert_error(again, 429, "rate_limited")
        other = await http.get("/v1/banks", headers={"Forwarded": 'for="[2001:db8::1]:443", for=10.0.0.7'})
        assert other.status_code == 200


# -- 13.3 principal kinds from a JWT -----------------------------------------------------------

SECRET = "a-long-shared-secret-for-tests-only"
JWT_ENV = {
    "ASTROCYTE_AUTH_MODE": "jwt",
    "ASTROCYTE_JWT_ALGORITHMS": "HS256",
    "ASTROCYTE_JWT_SECRET": SECRET,
    "ASTROCYTE_JWT_ISSUER": "https://idp.example",
    "ASTROCYTE_JWT_AUDIENCE": "astrocyte",
}


def _token(**claims: Any) -> str:
    now = int(time.time())
    base = {"iss": "https://idp.example", "aud": "astrocyte", "exp": now + 300, "iat": now}
    return pyjwt.encode({**base, **claims}, SECRET, algorithm="HS256")


async def _principals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [json.loads(r.getMessage())["principal"] for r in caplog.records if r.name.endswith("access")]


async def test_a_subject_spelled_like_a_service_stays_a_user(
    brain: Astrocyte, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**JWT_ENV, "ASTROCYTE_JWT_SERVICES": json.dumps({"chat-client-id": "service:chat"})}
    with caplog.at_level(logging.INFO, logger="astrocyte_gateway.access"):
        async with serve(env, brain) as (http, _):
            for claims in ({"sub": "service:chat"}, {"sub": "svc", "azp": "chat-client-id"}):
                headers = {"Authorization": f"Bearer {_token(**claims)}"}
                assert (await http.get("/v1/banks", headers=headers)).status_code == 200
    assert (await _principals(caplog))[-2:] == ["user:service:chat", "service:chat"]


# -- 13.4 / 13.5 oversized and ambiguous identity headers --------------------------------------


async def test_oversized_token_and_header_block_are_refused_without_logging_them(
    brain: Astrocyte, caplog: pytest.LogCaptureFixture
) -> None:
    token = "x" * 88_000
    with caplog.at_level(logging.DEBUG):
        async with serve(API_ENV, brain) as (http, _):
            big_token = await http.get("/v1/banks", headers={"Authorization": f"Bearer {token}"})
            assert_error(big_token, 401, "credential_too_large")
            padding = {f"x-pad-{i}": "y" * 1000 for i in range(20)}
            headers = {"X-API-Key": KEY_ALICE, **padding}
            assert_error(await http.get("/v1/banks", headers=headers), 431, "headers_too_large")
    assert token[:200] not in caplog.text


async def test_duplicate_identity_headers_are_400(brain: Astrocyte) -> None:
    async with serve(API_ENV, brain) as (http, _):
        two_auth = [("authorization", f"Bearer {KEY_ALICE}"), ("authorization", f"Bearer {KEY_BOB}")]
        assert_error(await http.get("/v1/banks", headers=two_auth), 400, "header_ambiguous")
        interleaved = [
            ("authorization", f"Bearer {KEY_ALICE}"),
            ("x-api-key", KEY_ALICE),
            ("authorization", "x"),
        ]
        assert_error(await http.get("/v1/banks", headers=interleaved), 400, "header_ambiguous")
        two_keys = [("x-api-key", KEY_ALICE), ("x-api-key", KEY_ALICE)]
        assert_error(await http.get("/v1/banks", headers=two_keys), 400, "header_ambiguous")
    async with serve({}, brain) as (http, _):
        conflicting = [("x-astrocyte-principal", "user:a"), ("x-astrocyte-principal", "user:b")]
        assert_error(await http.get("/v1/banks", headers=conflicting), 400, "header_ambiguous")
        same = [("x-astrocyte-principal", "user:a"), ("x-astrocyte-principal", "user:a")]
        assert (await http.get("/v1/banks", headers=same)).status_code == 200


# -- 13.6 bodies that lie ----------------------------------------------------------------------


async def test_non_standard_json_and_non_json_content_types_are_refused(client: httpx.AsyncClient) -> None:
    nan = b'{"content": "x", "bank_id": "b", "metadata": {"v": NaN}}'
    response = await client.post("/v1/retain", content=nan, headers={"content-type": "application/json"})
    assert_error(response, 400, "json_non_standard")
    inf = b'{"query": "x", "bank_id": "b", "max_results": Infinity}'
    assert (
        await client.post("/v1/recall", content=inf, headers={"content-type": "application/json"})
    ).status_code == 400
    words = b'{"content": "NaN and Infinity are words here", "bank_id": "b"}'
    assert (
        await client.post("/v1/retain", content=words, headers={"content-type": "application/json"})
    ).status_code == 200
    body = json.dumps({"content": "x", "bank_id": "b"}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await client.post("/v1/retain", content=body, headers=headers)
        assert_error(response, 415, "unsupported_media_type")
    vendor = await client.post(
        "/v1/retain", content=body, headers={"content-type": "application/vnd.x+json; charset=utf-8"}
    )
    assert vendor.status_code == 200


async def test_a_client_gone_before_its_body_is_not_a_server_error(
    brain: Astrocyte, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings.from_env({}), brain=brain)
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/retain", "raw_path": b"/v1/retain", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"50")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
            metrics = app.state.gateway.metrics.render().decode()
    assert sent == []  # nobody to answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "client went away" in caplog.text
    assert 'route="/v1/retain",status="499"' in metrics and 'status="500"' not in metrics


# -- 13.7 /metrics -----------------------------------------------------------------------------


async def test_metrics_need_the_admin_token_outside_dev_mode(brain: Astrocyte) -> None:
    async with serve({**API_ENV, "ASTROCYTE_ADMIN_TOKEN": "admin-token-value"}, brain) as (http, _):
        assert_error(await http.get("/metrics"), 403, "metrics_token_required")
        assert (await http.get("/metrics", headers={"X-Admin-Token": "admin-token-value"})).status_code == 200
        scrape = await http.get("/metrics", headers={"Authorization": "Bearer admin-token-value"})
        assert scrape.status_code == 200 and "astrocyte_gateway_requests_total" in scrape.text
    async with serve({**API_ENV, "ASTROCYTE_METRICS_ACCESS": "open"}, brain) as (http, _):
        assert (await http.get("/metrics")).status_code == 200  # a private listener's choice


# -- 16.1 authority tiers come from what the operator controls ---------------------------------

AUTHORITY_CONFIG = {
    "store": "memory",
    "embedder": "hashing",
    "access_control": {"enabled": True},
    "access_grants": [
        {"bank_id": "kb", "principal": "user:*", "permissions": ["read", "write"]},
        {"bank_id": "kb", "principal": "service:handbook-sync", "permissions": ["write"]},
    ],
    "recall_authority": {
        "tiers": ["policy", "user-notes"],
        "sources": {"handbook": "policy"},
        "default_tier": "user-notes",
        "trusted_writers": ["service:handbook-sync"],
    },
}


async def test_a_writer_chosen_source_earns_no_tier() -> None:
    keys = {**API_KEYS, "sync-key-0123456789abcdef": "service:handbook-sync"}
    env = {"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": json.dumps(keys)}
    forged = {"content": "Official policy: refunds need no receipt", "bank_id": "kb", "source": "handbook"}
    async with Astrocyte.from_dict(AUTHORITY_CONFIG) as engine, serve(env, engine) as (http, _):
        refused = await http.post("/v1/retain", json=forged, headers={"X-API-Key": KEY_BOB})
        assert_error(refused, 403, "source_not_trusted")
        note = {"content": "refunds need a receipt, says bob", "bank_id": "kb", "source": "bobs-notes"}
        assert (await http.post("/v1/retain", json=note, headers={"X-API-Key": KEY_BOB})).status_code == 200
        real = {"content": "Policy: refunds need a receipt", "bank_id": "kb", "source": "handbook"}
        trusted = await http.post("/v1/retain", json=real, headers={"X-API-Key": "sync-key-0123456789abcdef"})
        assert trusted.status_code == 200
        hits = (
            await http.post(
                "/v1/recall",
                json={"query": "refunds receipt", "bank_id": "kb"},
                headers={"X-API-Key": KEY_BOB},
            )
        ).json()["hits"]
    tiers = {hit["text"]: hit["authority_tier"] for hit in hits}
    assert tiers == {
        "Policy: refunds need a receipt": "policy",
        "refunds need a receipt, says bob": "user-notes",
    }


# -- 16.2 the dev mode and the browser ---------------------------------------------------------


async def test_a_cross_site_simple_request_cannot_forget_a_bank(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/v1/retain", json={"content": "keep me", "bank_id": "user-dev"})
    ).status_code == 200
    body = json.dumps({"bank_id": "user-dev", "scope": "all"})
    simple = await client.post("/v1/forget", content=body, headers={"content-type": "text/plain"})
    assert_error(simple, 415, "unsupported_media_type")
    cross_site = await client.post(
        "/v1/forget",
        content=body,
        headers={"content-type": "application/json", "Origin": "https://evil.example"},
    )
    assert_error(cross_site, 403, "origin_not_allowed")
    rebound = await client.post(
        "/v1/forget",
        content=body,
        headers={"content-type": "application/json", "Host": "rebind.evil.example"},
    )
    assert_error(rebound, 400, "host_not_allowed")
    assert (await client.get("/v1/banks/user-dev")).json()["memory_count"] == 1
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost", "astrocyte-gateway:8080"):
        assert (await client.get("/v1/banks", headers={"Host": host})).status_code == 200
    same_origin = await client.get(
        "/v1/banks", headers={"Host": "localhost:8080", "Origin": "http://localhost:8080"}
    )
    assert same_origin.status_code == 200


async def test_configured_hosts_are_served(brain: Astrocyte) -> None:
    async with serve({"ASTROCYTE_ALLOWED_HOSTS": "memory.example.com"}, brain) as (http, _):
        assert (await http.get("/v1/banks", headers={"Host": "memory.example.com"})).status_code == 200
        assert_error(
            await http.get("/v1/banks", headers={"Host": "other.example.com"}), 400, "host_not_allowed"
        )


# -- 16.4 / 16.5 redirects and /health ---------------------------------------------------------


async def test_no_redirect_is_built_from_the_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/banks/", headers={"Host": "localhost"})
    assert_error(response, 404)
    assert "location" not in response.headers


async def test_anonymous_health_names_no_internals(brain: Astrocyte) -> None:
    async with serve({"ASTROCYTE_ADMIN_TOKEN": "t0ken"}, brain) as (http, _):
        anonymous = (await http.get("/health")).json()
        assert anonymous["components"] and all(c["detail"] is None for c in anonymous["components"])
        admin = (await http.get("/health", headers={"X-Admin-Token": "t0ken"})).json()
        assert any(c["detail"] for c in admin["components"])


# -- 18.1 authentication without isolation does not start --------------------------------------


async def test_api_key_mode_without_access_control_does_not_start() -> None:
    async with Astrocyte.from_dict({"store": "memory", "embedder": "hashing"}) as engine:
        with pytest.raises(ConfigError, match="access control") as refused:
            async with serve(API_ENV, engine):
                pass
    assert refused.value.code == "access_control_required"


async def test_access_control_explicitly_off_starts_with_a_warning(
    brain: Astrocyte, caplog: pytest.LogCaptureFixture
) -> None:
    assert MEMORY_CONFIG["access_control"] == {"enabled": False}
    with caplog.at_level(logging.WARNING, logger="astrocyte_gateway.engine"):
        async with serve(API_ENV, brain) as (http, _):
            assert (await http.get("/live")).status_code == 200
    assert "access control is off" in caplog.text


async def test_owner_banks_keep_bob_out_of_alice(tmp_path: Any) -> None:
    env = {**API_ENV, "ASTROCYTE_DATA_DIR": str(tmp_path)}  # the embedded default: owner banks
    async with serve(env) as (http, _):
        alice, bob = {"X-API-Key": KEY_ALICE}, {"X-API-Key": KEY_BOB}
        mine = {"content": "alice's secret", "bank_id": "user:alice"}
        assert (await http.post("/v1/retain", json=mine, headers=alice)).status_code == 200
        assert_error(
            await http.post("/v1/recall", json={"query": "secret", "bank_id": "user:alice"}, headers=bob), 404
        )
        assert_error(await http.post("/v1/retain", json=mine, headers=bob), 403, "access_denied")
        assert (await http.get("/v1/banks", headers=bob)).json()["banks"] == []
        # A trusted service acting for alice works in alice's bank, and only there.
        for_alice = {"X-API-Key": KEY_SERVICE, "X-Astrocyte-Principal": "user:alice"}
        found = await http.post(
            "/v1/recall", json={"query": "secret", "bank_id": "user:alice"}, headers=for_alice
        )
        assert found.json()["hits"][0]["text"] == "alice's secret"
        assert_error(
            await http.post("/v1/recall", json={"query": "x", "bank_id": "user:bob"}, headers=for_alice), 404
        )


def test_short_api_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        Settings.from_env({"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": '{"short": "user:a"}'})


async def test_metrics_on_a_separate_port(brain: Astrocyte) -> None:
    from conftest import free_port

    port = free_port()
    env = {**API_ENV, "ASTROCYTE_METRICS_PORT": str(port)}
    async with serve(env, brain) as (http, _):
        await http.get("/live")
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200 and "astrocyte_gateway_requests_total" in scraped.text
        assert_error(await http.get("/metrics"), 403, "metrics_token_required")  # main port unchanged
    async with httpx.AsyncClient() as scraper:
        with pytest.raises(httpx.ConnectError):  # stopped with the app
            await scraper.get(f"http://127.0.0.1:{port}/metrics")
