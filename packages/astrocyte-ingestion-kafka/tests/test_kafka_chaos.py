"""Chaos on the real broker, through real consumer processes (the ``astrocyte-ingest`` supervisor
over a SQLite file):

- 20,000 records over 6 partitions, 1% poison; the broker is stopped for 10 s and restarted mid-run;
  the consumer is SIGKILLed while it holds stored-but-uncommitted records (frozen with SIGSTOP
  first, so the moment cannot pass) and restarted. Afterwards every valid record is stored exactly
  once, every poison record is dead-lettered exactly once, and the committed offsets are at the end
  of every partition.
- Two consumers in one group split the partitions; one is SIGKILLed, the other takes its
  partitions over, and nothing is lost or stored twice.

Bounded (well under a minute each on a 2-core machine) and not skipped in CI.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from astrocyte_ingestion_kafka.decode import record_ref
from astrocyte_ingestion_kafka.testing import (
    committed_offsets,
    create_topics,
    end_offsets,
    read_topic,
    services,
)
from conftest import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TOTAL = 20_000
PARTITIONS = 6
POISON_KINDS = ("not_utf8", "bad_json", "no_bank", "too_large", "null")
MAX_CONTENT_BYTES = 2_000
RUNNER = Path(__file__).parent / "ingest_runner.py"
Produced = dict[str, str | None]  # ref -> poison kind (None: valid)


def make_record(index: int) -> tuple[bytes | None, str | None]:
    """Record ``index``: its value and its poison kind (None when valid)."""
    content = f"chaos event {index}: agent {index % 50} observed signal {index * 7 % 1000}"
    if index % 100 == 37:
        kind = POISON_KINDS[(index // 100) % len(POISON_KINDS)]
        value = {
            "not_utf8": b"\xff\xfe broken " + str(index).encode(),
            "bad_json": b'{"content": "unterminated ' + str(index).encode(),
            "no_bank": json.dumps({"content": content}).encode(),
            "too_large": json.dumps({"content": "x" * (MAX_CONTENT_BYTES + 1), "bank_id": "chaos"}).encode(),
            "null": None,
        }[kind]
        return value, kind
    body = {"content": content, "bank_id": "chaos-a" if index % 3 else "chaos-b", "tags": ["chaos"]}
    return json.dumps(body).encode(), None


async def produce(bootstrap: str, topic: str, indexes: range) -> Produced:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for index in indexes:
            value, kind = make_record(index)
            key = f"k{index}".encode()  # a tombstone (null value) needs a key
            pending.append((await producer.send(topic, value, key=key, partition=index % PARTITIONS), kind))
        produced: Produced = {}
        for future, kind in pending:
            meta = await future
            produced[record_ref(meta.topic, meta.partition, meta.offset)] = kind
        return produced
    finally:
        await producer.stop()


class Consumer:
    """One ingest runner subprocess, logging to a file of its own."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), str(config)], stdout=self.log, stderr=self.log
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def assigned(self, count: int, within: float = 60) -> None:
        """Wait until the runner's latest assignment has ``count`` partitions."""

        def has() -> bool:
            assert self.process.poll() is None, self.text()[-3000:]
            found = re.findall(r"assigned (.*)", self.text())
            return bool(found) and len([p for p in found[-1].split(", ") if p.strip()]) == count

        await eventually(f"an assignment of {count} partitions", has, within)

    def partitions(self) -> set[str]:
        """The partitions (``topic:n``) of the runner's latest assignment."""
        found = re.findall(r"assigned (.*)", self.text())
        return {p.strip() for p in found[-1].split(", ")} if found else set()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self.log.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.log.close()
        return code


@pytest.fixture
def start_consumer(tmp_path: Path) -> Iterator[Callable[[Path], Consumer]]:
    started: list[Consumer] = []

    def start(config: Path) -> Consumer:
        started.append(Consumer(config, tmp_path / f"runner-{len(started) + 1}.log"))
        return started[-1]

    yield start
    for consumer in started:
        consumer.kill()


def write_config(tmp_path: Path, bootstrap: str, topic: str) -> tuple[Path, Path]:
    database = tmp_path / "memories.db"
    engine = {
        "store": "sqlite",
        "store_config": {"path": str(database)},
        "embedder": "hashing",
        "limits": {"max_content_bytes": MAX_CONTENT_BYTES},
    }
    source = {
        "type": "stream",
        "driver": "kafka",
        "required": True,
        "bootstrap_servers": [bootstrap],
        "topics": [topic],
        "group": topic,
        "batch_size": 500,
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "backoff_initial_ms": 50,
        "backoff_max_ms": 1_000,
        "probe_interval_s": 0.5,
        "request_timeout_ms": 5_000,
    }
    path = tmp_path / "runner.json"
    path.write_text(json.dumps({"engine": engine, "sources": {"chaos": source}}))
    return path, database


def stored_keys(database: Path) -> Counter[str]:
    if not database.exists():
        return Counter()
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        return Counter(key for (key,) in db.execute("SELECT idempotency_key FROM memories"))


async def committed_total(bootstrap: str, group: str) -> int:
    return sum((await committed_offsets(bootstrap, group)).values())


def all_committed(bootstrap: str, topic: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            ends, committed = await end_offsets(bootstrap, topic), await committed_offsets(bootstrap, topic)
        except Exception:  # the broker is restarting
            return False
        return len(ends) == PARTITIONS and all(committed.get(tp) == end for tp, end in ends.items())

    return probe


async def kill_holding_uncommitted(consumer: Consumer, bootstrap: str, group: str, database: Path) -> int:
    """SIGKILL ``consumer`` at a moment it has stored records whose offsets it has not committed:
    freeze it, compare the store with the committed offsets, kill it then (else thaw, retry)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        consumer.process.send_signal(signal.SIGSTOP)
        committed = await committed_offsets(bootstrap, group)
        owned = consumer.partitions()
        ahead = sum(
            1
            for key in stored_keys(database)
            if key.rsplit(":", 1)[0] in owned and _offset(key) >= committed.get(_tp(key), 0)
        )
        if ahead:
            consumer.kill()
            return ahead
        consumer.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.05)
    raise AssertionError("the consumer never held stored-but-uncommitted records within 60s")


def _tp(key: str) -> TopicPartition:
    topic, partition, _ = key.rsplit(":", 2)
    return TopicPartition(topic, int(partition))


def _offset(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


async def assert_outcome(bootstrap: str, topic: str, database: Path, produced: Produced, total: int) -> None:
    assert len(produced) == total
    valid = {ref for ref, kind in produced.items() if kind is None}
    stored = stored_keys(database)
    assert set(stored) == valid, f"{len(valid - set(stored))} lost, {len(set(stored) - valid)} unexpected"
    assert max(stored.values()) == 1
    letters = await read_topic(bootstrap, f"{topic}.dlq")
    counts = Counter(record.key.decode() for record in letters)
    poison = {ref: kind for ref, kind in produced.items() if kind}
    assert set(counts) == set(poison), "dead letters differ from the poison records"
    assert max(counts.values()) == 1, "a record was dead-lettered twice"
    codes = {poison[r.key.decode()]: dict(r.headers)["error_code"].decode() for r in letters}
    assert codes["not_utf8"] == "record_not_utf8" and codes["bad_json"] == "value_bad_json"
    assert codes["no_bank"] == "bank_missing" and codes["null"] == "value_null"
    assert "large" in codes["too_large"]
    headers = dict(letters[0].headers)
    assert {"source_topic", "source_partition", "source_offset", "attempts"} <= set(headers)
    assert await all_committed(bootstrap, topic)()


async def test_chaos_broker_restart_and_consumer_sigkill(
    bootstrap: str, name: str, tmp_path: Path, start_consumer: Callable[[Path], Consumer]
) -> None:
    await create_topics(bootstrap, [name], PARTITIONS)
    config, database = write_config(tmp_path, bootstrap, name)
    produced = await produce(bootstrap, name, range(0, TOTAL // 2))
    first = start_consumer(config)
    await first.assigned(PARTITIONS)
    await eventually(
        "a sixth of the records committed",
        lambda: _at_least(committed_total(bootstrap, name), TOTAL // 6),
        within=90,
    )
    await asyncio.to_thread(services, "down", "kafka")  # mid-run: the consumer degrades, waits
    try:
        await asyncio.sleep(10)
    finally:
        await asyncio.to_thread(services, "up", "kafka")
    produced |= await produce(bootstrap, name, range(TOTAL // 2, TOTAL))
    held = await kill_holding_uncommitted(first, bootstrap, name, database)
    second = start_consumer(config)
    await eventually("every record committed", all_committed(bootstrap, name), within=150)
    assert second.stop() == 0, second.text()[-3000:]
    assert held > 0
    await assert_outcome(bootstrap, name, database, produced, TOTAL)


async def test_two_consumers_split_partitions_and_one_takes_over(
    bootstrap: str, name: str, tmp_path: Path, start_consumer: Callable[[Path], Consumer]
) -> None:
    total = 6_000
    await create_topics(bootstrap, [name], PARTITIONS)
    config, database = write_config(tmp_path, bootstrap, name)
    first = start_consumer(config)
    await first.assigned(PARTITIONS)
    second = start_consumer(config)
    await asyncio.gather(first.assigned(PARTITIONS // 2), second.assigned(PARTITIONS // 2))
    produced = await produce(bootstrap, name, range(total))
    await eventually("some records stored", lambda: len(stored_keys(database)) > 500)
    await kill_holding_uncommitted(second, bootstrap, name, database)
    await first.assigned(PARTITIONS)  # after the dead member's session expired
    await eventually("every record committed", all_committed(bootstrap, name), within=90)
    assert first.stop() == 0, first.text()[-3000:]
    await assert_outcome(bootstrap, name, database, produced, total)


async def _at_least(value: Awaitable[int], wanted: int) -> bool:
    try:
        return await value >= wanted
    except Exception:
        return False
