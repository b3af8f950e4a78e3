"""The webhook route with a source naming a payload mapping: the gateway hands the verified body to
the mapping through the core (it never imports the package that registers it), and keyed messages
keep one memory per external object."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
from astrocyte import Astrocyte
from astrocyte.ingest.sink import IngestMessage
from astrocyte.ingest.webhook import sign
from conftest import serve

SECRET = "gh-hook-secret"


def tracker_payload(options: Mapping[str, Any]) -> Any:
    """A mapping like a tracker's: one object per delivery, keyed by its id, versioned by ``v``."""

    def mapper(headers: Mapping[str, str], body: bytes) -> Sequence[IngestMessage]:
        obj = json.loads(body)
        key = f"ticket:{obj['id']}"
        return [IngestMessage(f"{key}@{obj['v']}", obj["text"], bank_id=options["bank"], memory_key=key)]

    return mapper


CONFIG = {
    "store": "memory",
    "embedder": "hashing",
    "sources": {
        "tracker": {
            "type": "stream",
            "driver": "webhook",
            "secrets": [SECRET],
            "payload": f"{__name__}:tracker_payload",
            "payload_options": {"bank": "tickets"},
        }
    },
}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        Astrocyte.from_dict(CONFIG) as engine,
        serve({"ASTROCYTE_AUTH_MODE": "dev"}, engine) as (client, _),
    ):
        for _ in range(100):
            if (await client.get("/health/ingest")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        yield client


async def _deliver(http: httpx.AsyncClient, obj: dict[str, Any]) -> httpx.Response:
    body = json.dumps(obj).encode()
    headers = {
        "X-Hub-Signature-256": sign(SECRET, body),
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "content-type": "application/json",
    }
    return await http.post("/v1/ingest/webhook/tracker", content=body, headers=headers)


async def test_a_mapped_object_keeps_one_memory_across_versions(http: httpx.AsyncClient) -> None:
    first = await _deliver(http, {"id": 7, "v": 1, "text": "the printer on floor two jams"})
    second = await _deliver(http, {"id": 7, "v": 2, "text": "the printer on floor three jams"})
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["memory_id"] == second.json()["memory_id"]
    found = await http.post(
        "/v1/recall",
        json={"query": "printer jams", "bank_id": "tickets"},
        headers={"X-Astrocyte-Principal": "user:a"},
    )
    hits = found.json()["hits"]
    assert [h["text"] for h in hits] == ["the printer on floor three jams"]
