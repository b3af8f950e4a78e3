"""The core's ingest driver contract kit, run against the redis driver on a real redis-server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence

import pytest
from astrocyte.ingest.sink import Sink
from astrocyte.testing.ingest_contract import (
    ContractMessage,
    ContractSettings,
    IngestDriverContract,
    IngestHarness,
)
from astrocyte_ingestion_redis import RedisStreamDriver
from redis.asyncio import Redis
from redis_server import RedisServer

# A restarted driver keeps the consumer name, so it re-reads what its predecessor left pending at
# once (replicas with generated names recover the same entries through XAUTOCLAIM instead).
CONSUMER = "contract-consumer"


class RedisHarness(IngestHarness):
    """Drives a private redis-server for the kit: a new stream and group per check."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.stream = ""
        self.client: Redis | None = None
        self.published = 0

    @property
    def dead_letters(self) -> str:
        return f"{self.stream}:dlq"

    async def setup(self) -> None:
        self.stream = f"contract-{uuid.uuid4().hex[:10]}"
        self.client = Redis.from_url(self.server.url)

    async def teardown(self) -> None:
        if not self.server.running:
            self.server.start()
        assert self.client is not None
        await self.client.delete(self.stream, self.dead_letters)
        await self.client.aclose()

    def build_driver(self, sink: Sink) -> RedisStreamDriver:
        config = RedisStreamDriver.validate_config(
            {
                "url": self.server.url,
                "streams": [self.stream],
                "group": "contract",
                "consumer": CONSUMER,
                "batch_size": 8,
                "block_ms": 100,
                "backoff_initial_ms": 20,
                "backoff_max_ms": 400,
                "stats_interval_s": 0.2,
            }
        )
        return RedisStreamDriver("contract", config, sink=sink)

    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        refs = []
        for message in messages:
            self.published += 1
            refs.append(await self._add(_encode(message, as_payload=self.published % 2 == 0)))
        return refs

    async def publish_poison(self, kind: str) -> str:
        fields = {
            "undecodable": {b"content": b"\xff\xfe\xfa not utf-8", b"bank_id": b"contract-bank"},
            "bad_json": {b"payload": b'{"content": '},
            "missing_bank": {b"content": b"no bank here"},
        }[kind]
        return await self._add(fields)

    async def dead_letter_refs(self) -> list[str]:
        assert self.client is not None
        entries = await self.client.xrange(self.dead_letters)
        return [fields[b"source_ref"].decode() for _, fields in entries]

    async def break_transport(self) -> None:
        self.server.stop()

    async def restore_transport(self) -> None:
        self.server.start()

    async def _add(self, fields: dict[bytes, bytes]) -> str:
        assert self.client is not None
        entry_id = await self.client.xadd(self.stream, fields)
        return f"{self.stream}:{entry_id.decode()}"


def _encode(message: ContractMessage, *, as_payload: bool) -> dict[bytes, bytes]:
    """Half the messages in the fields form, half as a JSON payload."""
    if as_payload:
        body = {
            "content": message.content,
            "bank_id": message.bank_id,
            "tags": list(message.tags),
            "metadata": message.metadata,
        }
        return {b"payload": json.dumps(body).encode()}
    fields = {b"content": message.content.encode(), b"bank_id": message.bank_id.encode()}
    if message.tags:
        fields[b"tags"] = ",".join(message.tags).encode()
    if message.metadata:
        fields[b"metadata"] = json.dumps(message.metadata).encode()
    return fields


@pytest.fixture(scope="module")
def contract_server(redis_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_bin, tmp_path_factory.mktemp("redis-contract"))
    server.start()
    yield server
    server.stop()


class TestRedisDriverPassesTheContract(IngestDriverContract):
    contract_settings = ContractSettings(timeout=30.0)

    @pytest.fixture
    def harness(self, contract_server: RedisServer) -> IngestHarness:
        return RedisHarness(contract_server)
