"""The OpenAPI document: Tier 1 paths pinned, security schemes and error responses declared, and
the whole schema compared with a checked-in snapshot.

Refresh the snapshot after an intended API change with:
    ASTROCYTE_UPDATE_OPENAPI_SNAPSHOT=1 python -m pytest tests/test_openapi.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from astrocyte_gateway import Settings, create_app

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
TIER1 = {
    "/v1/retain": {"post"},
    "/v1/recall": {"post"},
    "/v1/reflect": {"post"},
    "/v1/forget": {"post"},
    "/v1/banks": {"get", "post"},
    "/v1/banks/{bank_id}": {"get", "delete"},
    "/v1/ingest/webhook/{source_id}": {"post"},
    "/v1/admin/sources": {"get"},
    "/v1/admin/banks": {"get"},
    "/v1/admin/limiter": {"get"},
    "/live": {"get"},
    "/health": {"get"},
    "/health/ingest": {"get"},
    "/metrics": {"get"},
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings.from_env({})).openapi()


def test_tier1_paths_are_present(schema: dict[str, Any]) -> None:
    for path, methods in TIER1.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), path


def test_security_schemes_and_error_responses_are_declared(schema: dict[str, Any]) -> None:
    assert set(schema["components"]["securitySchemes"]) == {"ApiKeyAuth", "BearerAuth", "AdminToken"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            for status in ("400", "413", "429", "500", "503"):
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (path, method, status)
            if path.startswith("/v1/") and "webhook" not in path:
                assert operation["security"], (path, method)
                assert {"401", "403"} <= set(responses), (path, method)


def test_retain_documents_the_idempotency_key_header(schema: dict[str, Any]) -> None:
    params = schema["paths"]["/v1/retain"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)


async def test_served_schema_matches_the_snapshot(schema: dict[str, Any]) -> None:
    app = create_app(Settings.from_env({}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        served = (await http.get("/openapi.json")).json()
    assert served == schema
    if os.environ.get("ASTROCYTE_UPDATE_OPENAPI_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(served, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert served == json.loads(SNAPSHOT.read_text(encoding="utf-8")), (
        "the API changed: review it, then refresh with ASTROCYTE_UPDATE_OPENAPI_SNAPSHOT=1"
    )
