"""Test support shipped with the driver: topic helpers and the ingest contract harness.

The core's contract kit finds the harness through :meth:`KafkaStreamDriver.contract_harness`, so
the ``contracts`` session tests this driver wherever it is installed. It runs against the broker
in ``ASTROCYTE_TEST_KAFKA_BOOTSTRAP`` with a new topic (3 partitions) and group per check; breaking
the transport stops that broker with ``$ASTROCYTE_TEST_SERVICES_SCRIPT down kafka`` (and ``up``
restores it), so run it only where nothing else uses that broker at the time.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]
from astrocyte.ingest.sink import Sink
from astrocyte.testing.ingest_contract import ContractMessage, ContractSettings, IngestHarness

from astrocyte_ingestion_kafka.decode import record_ref
from astrocyte_ingestion_kafka.driver import KafkaStreamDriver

PARTITIONS = 3


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, configs: dict[str, str] | None = None
) -> None:
    """Create topics (from the test's admin client, so the broker's defaults need no change)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs or {}) for name in names]
        )
    finally:
        await admin.close()


async def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (empty for a group that never committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await reader.start()
    try:
        await reader._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return dict(await reader.end_offsets(tps)) if tps else {}
    finally:
        await reader.stop()


async def reset_offsets(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 for every partition of ``topic`` in ``group`` (an operator's reset)."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit(dict.fromkeys(ends, 0))
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` from the beginning up to its current end."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = reader.partitions_for_topic(topic)
        if partitions is None:
            await reader._client.force_metadata_update()
            partitions = reader.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        found: list[Any] = []
        behind = [tp for tp in tps if ends[tp] > 0]
        while behind:
            for records in (await reader.getmany(*behind, timeout_ms=500)).values():
                found.extend(records)
            behind = [tp for tp in behind if await reader.position(tp) < ends[tp]]
        return found
    finally:
        await reader.stop()


def services(*args: str) -> None:
    """Run the test rig's services script (``down kafka`` / ``up kafka``)."""
    script = os.environ.get("ASTROCYTE_TEST_SERVICES_SCRIPT")
    if not script:
        raise RuntimeError("ASTROCYTE_TEST_SERVICES_SCRIPT is not set; cannot stop or start the broker")
    subprocess.run([script, *args], check=True, stdout=subprocess.DEVNULL, timeout=300)


class KafkaHarness(IngestHarness):
    """Drives the test broker for the kit: a new topic and group per check."""

    contract_settings = ContractSettings(timeout=60.0)

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.topic = ""
        self.group = ""
        self.producer: AIOKafkaProducer | None = None
        self.published = 0

    @property
    def dead_letters(self) -> str:
        return f"{self.topic}.dlq"

    @classmethod
    def from_env(cls) -> KafkaHarness | None:
        bootstrap = os.environ.get("ASTROCYTE_TEST_KAFKA_BOOTSTRAP")
        return cls(bootstrap) if bootstrap else None

    async def setup(self) -> None:
        run = uuid.uuid4().hex[:10]
        self.topic, self.group = f"contract-{run}", f"contract-{run}"
        await create_topics(self.bootstrap, [self.topic, self.dead_letters], PARTITIONS)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()

    async def teardown(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    def build_driver(self, sink: Sink) -> KafkaStreamDriver:
        config = KafkaStreamDriver.validate_config(
            {
                "bootstrap_servers": [self.bootstrap],
                "topics": [self.topic],
                "group": self.group,
                "batch_size": 8,
                "poll_timeout_ms": 100,
                "session_timeout_ms": 6_000,
                "heartbeat_interval_ms": 1_000,
                "backoff_initial_ms": 20,
                "backoff_max_ms": 400,
                "probe_interval_s": 0.3,
                "probe_timeout_s": 1.5,
                "request_timeout_ms": 5_000,
            }
        )
        return KafkaStreamDriver("contract", config, sink=sink)

    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        refs = []
        for message in messages:
            self.published += 1
            value, headers = _encode(message, as_json=self.published % 2 == 0)
            refs.append(await self._send(value, headers))
        return refs

    async def publish_poison(self, kind: str) -> str:
        value = {
            "undecodable": b"\xff\xfe\xfa not utf-8",
            "bad_json": b'{"content": ',
            "missing_bank": b'{"content": "no bank here"}',
        }[kind]
        return await self._send(value, [])

    async def dead_letter_refs(self) -> list[str]:
        return [record.key.decode() for record in await read_topic(self.bootstrap, self.dead_letters)]

    async def break_transport(self) -> None:
        await asyncio.to_thread(services, "down", "kafka")

    async def replay(self) -> None:
        """An operator's reset: the group's offsets back to 0 on every partition."""
        await reset_offsets(self.bootstrap, self.group, self.topic)

    async def break_dead_letters(self) -> None:
        """A real broker refusal: the dead-letter topic takes no record of any size."""
        await alter_topic(self.bootstrap, self.dead_letters, {"max.message.bytes": "64"})

    async def restore_dead_letters(self) -> None:
        await alter_topic(self.bootstrap, self.dead_letters, {"max.message.bytes": "1048588"})

    async def restore_transport(self) -> None:
        await asyncio.to_thread(services, "up", "kafka")

    async def _send(self, value: bytes, headers: list[tuple[str, bytes]]) -> str:
        assert self.producer is not None
        meta = await self.producer.send_and_wait(self.topic, value, headers=headers)
        return record_ref(meta.topic, meta.partition, meta.offset)


def _encode(message: ContractMessage, *, as_json: bool) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Half the messages as a JSON object, half as plain text with the bank and tags in headers."""
    if as_json:
        body = {
            "content": message.content,
            "bank_id": message.bank_id,
            "tags": list(message.tags),
            "metadata": message.metadata,
        }
        return json.dumps(body).encode(), []
    headers = [("bank_id", message.bank_id.encode())]
    if message.tags:
        headers.append(("tags", ",".join(message.tags).encode()))
    if message.metadata:
        headers.append(("metadata", json.dumps(message.metadata).encode()))
    return message.content.encode(), headers
