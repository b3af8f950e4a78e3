"""api_key mode: keys map to principals; only trusted-service keys may name an end user."""

from __future__ import annotations

import json
import logging

import pytest
from astrocyte import Astrocyte
from conftest import assert_error, serve

KEYS = {
    "agent-key-123-0123456789": "agent:planner",
    "svc-key-456-0123456789": {"principal": "service:chat-backend", "trusted_service": True},
}
ENV = {"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": json.dumps(KEYS)}
RETAIN = {"content": "likes jazz", "bank_id": "user-bob"}


async def test_missing_and_invalid_keys_are_401(brain: Astrocyte) -> None:
    async with serve(ENV, brain) as (http, _):
        assert_error(await http.post("/v1/retain", json=RETAIN), 401, "api_key_missing")
        assert_error(
            await http.post("/v1/retain", json=RETAIN, headers={"X-API-Key": "nope"}), 401, "api_key_invalid"
        )
        ok = await http.post("/v1/retain", json=RETAIN, headers={"X-API-Key": "agent-key-123-0123456789"})
        assert ok.status_code == 200
        bearer = await http.post(
            "/v1/retain", json=RETAIN, headers={"Authorization": "Bearer agent-key-123-0123456789"}
        )
        assert bearer.status_code == 200


async def test_trusted_service_names_the_end_user(brain: Astrocyte, caplog: pytest.LogCaptureFixture) -> None:
    headers = {"X-API-Key": "svc-key-456-0123456789", "X-Astrocyte-Principal": "user:bob"}
    with caplog.at_level(logging.INFO, logger="astrocyte_gateway.access"):
        async with serve(ENV, brain) as (http, _):
            response = await http.post("/v1/retain", json=RETAIN, headers=headers)
    assert response.status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "astrocyte_gateway.access"]
    assert lines[-1]["principal"] == "service:chat-backend"
    assert lines[-1]["acting_for"] == "user:bob"
    assert "svc-key-456-0123456789" not in caplog.text  # keys never reach the log


async def test_untrusted_key_may_not_name_a_principal(brain: Astrocyte) -> None:
    headers = {"X-API-Key": "agent-key-123-0123456789", "X-Astrocyte-Principal": "user:bob"}
    async with serve(ENV, brain) as (http, _):
        assert_error(
            await http.post("/v1/retain", json=RETAIN, headers=headers), 403, "principal_header_not_allowed"
        )


async def test_named_principal_must_be_well_formed(brain: Astrocyte) -> None:
    headers = {"X-API-Key": "svc-key-456-0123456789", "X-Astrocyte-Principal": "bob"}
    async with serve(ENV, brain) as (http, _):
        assert_error(await http.post("/v1/retain", json=RETAIN, headers=headers), 400, "principal_invalid")


async def test_acting_for_reaches_the_core_policy() -> None:
    config = {
        "store": "memory",
        "embedder": "hashing",
        "access_control": {"enabled": True},
        "access_grants": [
            {"bank_id": "user-*", "principal": "service:chat-backend", "permissions": ["read", "write"]},
            {"bank_id": "user-bob", "principal": "user:bob", "permissions": ["read", "write"]},
        ],
    }
    async with Astrocyte.from_dict(config) as engine, serve(ENV, engine) as (http, _):
        as_bob = {"X-API-Key": "svc-key-456-0123456789", "X-Astrocyte-Principal": "user:bob"}
        assert (await http.post("/v1/retain", json=RETAIN, headers=as_bob)).status_code == 200
        # The service alone could write user-carol; acting for bob it cannot.
        carol = {"content": "x", "bank_id": "user-carol"}
        assert_error(await http.post("/v1/retain", json=carol, headers=as_bob), 403)
        alone = {"X-API-Key": "svc-key-456-0123456789"}
        assert (await http.post("/v1/retain", json=carol, headers=alone)).status_code == 200
        # An untrusted key with no grant at all is denied by the core, not by the gateway.
        assert_error(
            await http.post("/v1/retain", json=RETAIN, headers={"X-API-Key": "agent-key-123-0123456789"}), 403
        )
