"""The memory and bank routes translate HTTP into core calls, with the core's field names."""

from __future__ import annotations

import httpx
from conftest import assert_error


async def test_retain_then_recall_returns_the_memory(client: httpx.AsyncClient) -> None:
    stored = await client.post(
        "/v1/retain", json={"content": "Alice prefers green tea", "bank_id": "user-alice"}
    )
    assert stored.status_code == 200
    assert stored.json()["stored"] is True
    recalled = await client.post(
        "/v1/recall", json={"query": "what does Alice drink", "bank_id": "user-alice"}
    )
    assert recalled.status_code == 200
    body = recalled.json()
    assert set(body) == {"hits", "total_available", "truncated", "trace", "authority_context"}
    assert body["hits"][0]["text"] == "Alice prefers green tea"
    assert body["hits"][0]["memory_id"] == stored.json()["memory_id"]


async def test_idempotency_key_header_deduplicates(client: httpx.AsyncClient) -> None:
    payload = {"content": "the deploy window is Tuesday", "bank_id": "ops"}
    first = await client.post("/v1/retain", json=payload, headers={"Idempotency-Key": "evt-1"})
    second = await client.post("/v1/retain", json=payload, headers={"Idempotency-Key": "evt-1"})
    assert first.json()["deduplicated"] is False
    assert second.json() == {**first.json(), "deduplicated": True}
    too_long = await client.post("/v1/retain", json=payload, headers={"Idempotency-Key": "k" * 256})
    body = assert_error(too_long, 400, "validation_error")
    assert "header.Idempotency-Key: String should have at most 255 characters" in body["detail"]


async def test_reflect_answers_without_an_llm(client: httpx.AsyncClient) -> None:
    await client.post("/v1/retain", json={"content": "The office is in Lisbon", "bank_id": "facts"})
    response = await client.post("/v1/reflect", json={"query": "where is the office", "bank_id": "facts"})
    assert response.status_code == 200
    assert "Lisbon" in response.json()["answer"]
    assert response.json()["sources"]


async def test_forget_by_ids_and_all(client: httpx.AsyncClient) -> None:
    ids = []
    for text in ("one fact", "two fact", "three fact"):
        ids.append(
            (await client.post("/v1/retain", json={"content": text, "bank_id": "f"})).json()["memory_id"]
        )
    response = await client.post("/v1/forget", json={"bank_id": "f", "memory_ids": ids[:1]})
    assert response.json() == {"deleted_count": 1}
    response = await client.post("/v1/forget", json={"bank_id": "f", "scope": "all"})
    assert response.json() == {"deleted_count": 2}


async def test_bank_routes(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/banks", json={"bank_id": "team.notes"})
    assert created.status_code == 201
    assert created.json()["bank_id"] == "team.notes"
    await client.post("/v1/retain", json={"content": "note", "bank_id": "team.notes"})
    assert "team.notes" in (await client.get("/v1/banks")).json()["banks"]
    stats = await client.get("/v1/banks/team.notes")
    assert stats.json()["memory_count"] == 1
    deleted = await client.delete("/v1/banks/team.notes")
    assert deleted.json() == {"deleted_count": 1}
    assert_error(await client.get("/v1/banks/team.notes"), 404)


async def test_validation_errors_are_400_with_code(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/recall", json={"query": ""}), 400, "validation_error")
    assert_error(await client.post("/v1/retain", json={"content": "x"}), 400, "validation_error")
    assert_error(
        await client.post("/v1/retain", content=b"{not json", headers={"content-type": "application/json"}),
        400,
    )
    assert_error(await client.post("/v1/recall", json={"query": "q", "unknown": 1}), 400, "validation_error")


async def test_core_errors_keep_their_code_and_status(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.post("/v1/recall", json={"query": "q", "bank_id": "absent"}), 404, "bank_not_found"
    )
    body = assert_error(await client.post("/v1/retain", json={"content": "x", "bank_id": "-bad id"}), 400)
    assert body["code"] != "internal_error"
    assert_error(await client.post("/v1/forget", json={"bank_id": "absent"}), 400)


async def test_every_response_has_a_request_id_and_a_supplied_one_is_echoed(
    client: httpx.AsyncClient,
) -> None:
    assert len((await client.get("/live")).headers["x-request-id"]) >= 16
    echoed = await client.get("/live", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    unsafe = await client.get("/live", headers={"X-Request-ID": "bad id\twith tab"})
    assert unsafe.headers["x-request-id"] != "bad id\twith tab"
    assert_error(await client.get("/no/such/route"), 404, "not_found")
    assert_error(await client.put("/v1/recall"), 405, "method_not_allowed")
