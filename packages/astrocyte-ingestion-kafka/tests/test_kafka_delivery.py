"""Delivery rules on the real broker: a record is dead-lettered once whatever re-delivers it, a
failing sink or dead-letter write never loses (or repeats) a valid record nor lets a commit pass an
unsettled one, a rebalance mid-batch repeats nothing, and health tells the truth about the broker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from astrocyte.ingest.sink import IngestMessage, Outcome, Sink
from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_kafka.decode import record_ref
from astrocyte_ingestion_kafka.driver import KafkaStreamDriver
from astrocyte_ingestion_kafka.testing import (
    alter_topic,
    committed_offsets,
    create_topics,
    end_offsets,
    read_topic,
    reset_offsets,
    services,
)
from conftest import eventually
from prometheus_client import REGISTRY


def driver_for(bootstrap: str, topic: str, sink: Sink, **keys: Any) -> KafkaStreamDriver:
    config = KafkaStreamDriver.validate_config(
        {
            "bootstrap_servers": [bootstrap],
            "topics": [topic],
            "group": topic,
            "poll_timeout_ms": 100,
            "session_timeout_ms": 6_000,
            "heartbeat_interval_ms": 1_000,
            "backoff_initial_ms": 50,
            "backoff_max_ms": 500,
            "probe_interval_s": 0.3,
            "probe_timeout_s": 1.5,
            **keys,
        }
    )
    return KafkaStreamDriver(f"src-{topic}", config, sink=sink)


@asynccontextmanager
async def running(driver: KafkaStreamDriver) -> AsyncIterator[KafkaStreamDriver]:
    task = asyncio.create_task(driver.start())
    try:
        yield driver
    finally:
        await driver.stop(5.0)
        await asyncio.wait_for(task, 5.0)


async def produce(
    bootstrap: str, topic: str, values: Sequence[bytes], partition: int | None = None
) -> list[str]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        refs = []
        for value in values:
            meta = await producer.send_and_wait(topic, value, partition=partition)
            refs.append(record_ref(meta.topic, meta.partition, meta.offset))
        return refs
    finally:
        await producer.stop()


def valid(label: str, count: int) -> list[bytes]:
    return [json.dumps({"content": f"{label} {i}", "bank_id": "b"}).encode() for i in range(count)]


async def dead_letter_counts(bootstrap: str, topic: str) -> Counter[str]:
    return Counter(r.key.decode() for r in await read_topic(bootstrap, f"{topic}.dlq"))


async def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    ends, committed = await end_offsets(bootstrap, topic), await committed_offsets(bootstrap, group)
    return all(committed.get(tp) == end for tp, end in ends.items())


async def test_dead_letters_once_even_when_the_group_rereads_everything(bootstrap: str, name: str) -> None:
    await create_topics(bootstrap, [name], 2)
    sink = ContractSink()
    poison = [b"\xff\xfe", b'{"content": ', b'{"content": "no bank"}', b'{"bank_id": "b"}']
    values = valid("first", 10) + poison + valid("second", 10)
    refs = await produce(bootstrap, name, values)
    poison_refs = set(refs[10:14])
    async with running(driver_for(bootstrap, name, sink)):
        await eventually("every record committed", lambda: all_committed(bootstrap, name, name))
    assert await dead_letter_counts(bootstrap, name) == Counter(dict.fromkeys(poison_refs, 1))
    # The operator resets the group: a new instance (no memory of what it wrote) re-reads it all.
    await reset_offsets(bootstrap, name, name)
    assert not await all_committed(bootstrap, name, name)
    async with running(driver_for(bootstrap, name, sink)):
        await eventually("every record committed again", lambda: all_committed(bootstrap, name, name))
    assert await dead_letter_counts(bootstrap, name) == Counter(dict.fromkeys(poison_refs, 1))
    assert all(n == 1 for n in sink.stored_contents.values()) and len(sink.stored_contents) == 20
    assert sum(sink.duplicate_contents.values()) == 20  # the re-read took effect as duplicates


async def test_a_failing_dead_letter_write_holds_back_no_valid_record(bootstrap: str, name: str) -> None:
    # A real broker refusal: the dead-letter topic takes no record this large until reconfigured.
    await create_topics(bootstrap, [name], 1)
    await create_topics(bootstrap, [f"{name}.dlq"], 1, {"max.message.bytes": "200"})
    sink = ContractSink()
    values = [*valid("before", 5), b"{" + b"x" * 400, *valid("after", 5)]
    refs = await produce(bootstrap, name, values)
    tp = TopicPartition(name, 0)
    driver = driver_for(bootstrap, name, sink, batch_size=50)
    async with running(driver):
        await eventually("every valid record stored", lambda: len(sink.stored_contents) == 10)
        await eventually(
            "the commit up to (not past) the unwritten dead letter",
            lambda: _committed_is(bootstrap, name, tp, 5),
        )
        assert (await driver.health()).state == "degraded"
        assert "dead-letter" in ((await driver.health()).detail or "")
        assert await _committed_is(bootstrap, name, tp, 5)  # still: a retry did not move it on
        await alter_topic(bootstrap, f"{name}.dlq", {"max.message.bytes": "1048576"})
        await eventually("everything committed", lambda: all_committed(bootstrap, name, name))
        await eventually("health running", lambda: _state_is(driver, "running"))
    assert await dead_letter_counts(bootstrap, name) == Counter({refs[5]: 1})
    assert all(n == 1 for n in sink.stored_contents.values())
    assert not sink.duplicate_contents  # only the dead letter was retried


class FlakyFor:
    """Answers ``failed`` for messages whose content contains ``marker`` during the first ``times``
    calls; everything else goes through to the inner sink."""

    def __init__(self, inner: ContractSink, marker: str, times: int) -> None:
        self.inner, self.marker, self.times = inner, marker, times
        self.calls = 0

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        self.calls += 1
        if self.calls > self.times:
            return await self.inner.submit(batch)
        good = [m for m in batch if self.marker not in m.content]
        answers = iter(await self.inner.submit(good))
        return [
            Outcome.failed("provider_unavailable", "flaky") if self.marker in m.content else next(answers)
            for m in batch
        ]


async def test_a_failing_sink_mid_batch_retries_only_what_is_left(bootstrap: str, name: str) -> None:
    await create_topics(bootstrap, [name], 1)
    inner = ContractSink()
    sink = FlakyFor(inner, "flaky", times=4)
    values = [*valid("ok-a", 3), *valid("flaky", 2), b"\xff poison", *valid("ok-b", 3)]
    refs = await produce(bootstrap, name, values)
    async with running(driver_for(bootstrap, name, sink, batch_size=50)):
        await eventually(
            "the poison dead-lettered while the sink fails", lambda: _dlq_has(bootstrap, name, refs[5])
        )
        await eventually("everything committed", lambda: all_committed(bootstrap, name, name))
    assert len(inner.stored_contents) == 8 and all(n == 1 for n in inner.stored_contents.values())
    assert not inner.duplicate_contents  # the stored ones were not submitted again
    assert await dead_letter_counts(bootstrap, name) == Counter({refs[5]: 1})


async def test_commit_waits_for_a_failing_record(bootstrap: str, name: str) -> None:
    await create_topics(bootstrap, [name], 1)
    inner = ContractSink()
    sink = FlakyFor(inner, "flaky", times=10**9)  # never recovers while we look
    await produce(bootstrap, name, [*valid("ok", 3), *valid("flaky", 1), *valid("ok-after", 3)])
    tp = TopicPartition(name, 0)
    driver = driver_for(bootstrap, name, sink, batch_size=50)
    async with running(driver):
        await eventually("the records around it stored", lambda: len(inner.stored_contents) == 6)
        await eventually("offset 3 committed", lambda: _committed_is(bootstrap, name, tp, 3))
        await eventually("health degraded (sink failing)", lambda: _state_is(driver, "degraded"))
        await asyncio.sleep(1.0)
        assert await _committed_is(bootstrap, name, tp, 3)
        [partition] = driver.partition_health()
        assert partition["state"] == "degraded" and "sink failing" in partition["last_error"]


async def test_a_rebalance_mid_batch_loses_and_repeats_nothing(bootstrap: str, name: str) -> None:
    await create_topics(bootstrap, [name], 6)
    sink = ContractSink(latency=0.3)
    refs = await produce(bootstrap, name, valid("rebalance", 600))
    first = driver_for(bootstrap, name, sink, batch_size=20)
    second = driver_for(bootstrap, name, sink, batch_size=20)
    async with running(first):
        await eventually("a batch in the sink", lambda: sink.in_flight > 0)
        async with running(second):  # joins the group while the first holds batches in the sink
            await eventually("the second consumer assigned", lambda: bool(second.workers))
            assert len(first.workers) + len(second.workers) == 6
            await eventually("every record stored", lambda: len(sink.stored_contents) == 600, within=60)
            await eventually("everything committed", lambda: all_committed(bootstrap, name, name))
    assert all(n == 1 for n in sink.stored_contents.values())
    assert not sink.duplicate_contents, "a record was handed to the sink twice across the rebalance"
    assert len(refs) == 600


async def test_health_degraded_while_the_broker_is_down_even_at_start(bootstrap: str, name: str) -> None:
    await create_topics(bootstrap, [name], 2)
    sink = ContractSink()
    await asyncio.to_thread(services, "down", "kafka")
    try:
        driver = driver_for(bootstrap, name, sink, backoff_max_ms=1_000)
        async with running(driver):
            await eventually("health degraded with the broker down", lambda: _state_is(driver, "degraded"))
            assert "unreachable" in ((await driver.health()).detail or "")
            await asyncio.to_thread(services, "up", "kafka")
            await eventually(
                "health running once the broker is back", lambda: _state_is(driver, "running"), 60
            )
            await produce(bootstrap, name, valid("after-outage", 10))
            await eventually("records stored", lambda: len(sink.stored_contents) == 10)
            await eventually("lag 0", lambda: _lag_is(driver, 0))
            health = await driver.health()
            assert health.pending == 0 and len(driver.partition_health()) == 2
    finally:
        await asyncio.to_thread(services, "up", "kafka")
    source = f"src-{name}"
    assert REGISTRY.get_sample_value("astrocyte_kafka_records_total", {"source": source, "topic": name}) == 10
    assert (
        REGISTRY.get_sample_value("astrocyte_kafka_outcomes_total", {"source": source, "outcome": "stored"})
        == 10
    )
    assert REGISTRY.get_sample_value("astrocyte_kafka_commit_seconds_count", {"source": source})


async def _committed_is(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> bool:
    return (await committed_offsets(bootstrap, group)).get(tp) == offset


async def _state_is(driver: KafkaStreamDriver, state: str) -> bool:
    return (await driver.health()).state == state


async def _lag_is(driver: KafkaStreamDriver, lag: int) -> bool:
    return (await driver.health()).lag == lag


async def _dlq_has(bootstrap: str, topic: str, ref: str) -> bool:
    return ref in await dead_letter_counts(bootstrap, topic)
