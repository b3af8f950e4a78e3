"""Chaos: 20,000 entries (1% poison) through a real consumer process into SQLite, while Redis is
stopped (SIGTERM, or SIGKILL: with AOF and ``appendfsync always`` nothing acknowledged is lost
either way) and restarted, and the consumer is SIGKILLed and replaced. Afterwards every valid entry is
stored exactly once, every poison entry is dead-lettered exactly once, and nothing is pending.

The consumer is killed at a moment it holds read but unacknowledged entries (frozen with SIGSTOP
first, so the moment cannot pass), and the replacement must claim them. Bounded (about 7 s per run
on a 2-core machine) and not skipped in CI.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from astrocyte.types import RetainRequest
from astrocyte_ingestion_redis.testing import RedisServer
from redis.asyncio import Redis
from redis.exceptions import RedisError

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TOTAL = 20_000
POISON_KINDS = ("not_utf8", "bad_json", "no_bank", "too_large")
MAX_CONTENT_BYTES = 2_000
GROUP = "chaos"
RUNNER = Path(__file__).parent / "ingest_runner.py"


def make_entry(index: int) -> tuple[dict[bytes, bytes], str | None, str | None]:
    """Entry ``index``: its fields, its poison kind (None when valid) and its bank."""
    bank = "chaos-a" if index % 3 else "chaos-b"
    content = f"chaos event {index}: agent {index % 50} observed signal {index * 7 % 1000}"
    if index % 100 == 37:
        kind = POISON_KINDS[(index // 100) % len(POISON_KINDS)]
        fields = {
            "not_utf8": {b"content": b"\xff\xfe broken " + str(index).encode(), b"bank_id": bank.encode()},
            "bad_json": {b"payload": b'{"content": "unterminated ' + str(index).encode()},
            "no_bank": {b"content": content.encode()},
            "too_large": {b"content": b"x" * (MAX_CONTENT_BYTES + 1), b"bank_id": bank.encode()},
        }[kind]
        return fields, kind, None
    if index % 2:
        payload = {"content": content, "bank_id": bank, "tags": ["chaos"], "metadata": {"n": index}}
        return {b"payload": json.dumps(payload).encode()}, None, bank
    return {b"content": content.encode(), b"bank_id": bank.encode(), b"tags": b"chaos,even"}, None, bank


async def produce(client: Redis, stream: str, indexes: range) -> dict[str, tuple[str | None, str | None]]:
    """XADD the entries in pipelined chunks; entry id -> (poison kind, bank)."""
    produced: dict[str, tuple[str | None, str | None]] = {}
    for start in range(indexes.start, indexes.stop, 500):
        chunk = [make_entry(i) for i in range(start, min(start + 500, indexes.stop))]
        async with client.pipeline(transaction=False) as pipe:
            for fields, _, _ in chunk:
                pipe.xadd(stream, fields)
            ids = await pipe.execute()
        for entry_id, (_, kind, bank) in zip(ids, chunk, strict=True):
            produced[entry_id.decode()] = (kind, bank)
    return produced


async def group_info(client: Redis, stream: str) -> dict[str, Any] | None:
    """XINFO GROUPS for the chaos group, or None while Redis is unreachable."""
    try:
        groups = await client.xinfo_groups(stream)
    except RedisError:
        return None
    return next((g for g in groups if g["name"] == GROUP.encode()), None)


async def wait_for(
    what: str, probe: Callable[[], Awaitable[bool]], within: float, every: float = 0.1
) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def read_at_least(client: Redis, stream: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        info = await group_info(client, stream)
        return info is not None and int(info.get("entries-read") or 0) >= count

    return probe


def all_settled(client: Redis, stream: str) -> Callable[[], Awaitable[bool]]:
    """Nothing pending and the group has been handed the stream's last entry (``lag`` may be nil
    when Redis cannot count, so compare ids instead)."""

    async def probe() -> bool:
        info = await group_info(client, stream)
        if info is None or info.get("pending") != 0:
            return False
        try:
            last = (await client.xinfo_stream(stream))["last-generated-id"]
        except RedisError:
            return False
        return bool(info["last-delivered-id"] == last)

    return probe


class Consumer:
    """One ingest runner subprocess, logging to a file of its own."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), str(config)], stdout=self.log, stderr=self.log
        )

    async def ready(self, within: float = 60) -> None:
        """Wait for the runner to say it is consuming (its SIGTERM handler is installed by then)."""

        async def said_ready() -> bool:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            return "ready" in self.log_path.read_text()

        await wait_for("the consumer to start", said_ready, within)

    def kill(self) -> None:
        """SIGKILL (a no-op when the process already exited)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self.log.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.log.close()
        return code


async def kill_holding_entries(consumer: Consumer, client: Redis, stream: str, within: float = 60) -> int:
    """SIGKILL ``consumer`` at a moment it holds read but unacknowledged entries (the only live
    consumer of the group): freeze it with SIGSTOP, check the group still has entries pending, and
    kill it then (else let it run on and try again). Returns how many entries it left pending."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await client.xpending(stream, GROUP))["pending"]:
            consumer.process.send_signal(signal.SIGSTOP)
            pending = (await client.xpending(stream, GROUP))["pending"]
            if pending:
                consumer.kill()
                return int(pending)
            consumer.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.002)
    raise AssertionError(f"the consumer never held pending entries within {within:.0f}s")


@pytest.fixture
def start_consumer(tmp_path: Path) -> Iterator[Callable[[Path], Consumer]]:
    """Starts runner processes (logs runner-1.log, runner-2.log, ...), and kills whatever a failing
    test left running."""
    started: list[Consumer] = []

    def start(config: Path) -> Consumer:
        started.append(Consumer(config, tmp_path / f"runner-{len(started) + 1}.log"))
        return started[-1]

    yield start
    for consumer in started:
        consumer.kill()


def chaos_config(server: RedisServer, stream: str, database: Path) -> dict[str, Any]:
    engine = {
        "store": "sqlite",
        "store_config": {"path": str(database)},
        "embedder": "hashing",
        "limits": {"max_content_bytes": MAX_CONTENT_BYTES},
    }
    source = {
        "type": "stream",
        "driver": "redis",
        "required": True,
        "url": server.url,
        "streams": [stream],
        "group": GROUP,
        "batch_size": 500,
        "concurrency": 2,
        "block_ms": 500,
        "claim_idle_ms": 3_000,
        "backoff_initial_ms": 50,
        "backoff_max_ms": 1_000,
    }
    return {"engine": engine, "sources": {"chaos": source}}


@pytest.mark.parametrize(
    "redis_stop", [signal.SIGTERM, signal.SIGKILL], ids=["redis-stopped", "redis-killed"]
)
async def test_chaos_redis_restart_and_consumer_sigkill(
    own_redis_server: RedisServer,
    tmp_path: Path,
    start_consumer: Callable[[Path], Consumer],
    redis_stop: signal.Signals,
) -> None:
    stream = "chaos-events"
    config = chaos_config(own_redis_server, stream, tmp_path / "memories.db")
    config_path = tmp_path / "runner.json"
    config_path.write_text(json.dumps(config))
    client = Redis.from_url(own_redis_server.url)
    try:
        produced = await produce(client, stream, range(0, TOTAL // 2))
        first = start_consumer(config_path)
        await first.ready()
        # Stop Redis while the consumer is busy with the first half (polled fast: it reads ~15k/s).
        await wait_for(
            "a sixth of the entries read", read_at_least(client, stream, TOTAL // 6), 90, every=0.01
        )
        own_redis_server.stop(redis_stop)  # mid-run: the consumer degrades and reconnects
        await asyncio.sleep(1.5)
        own_redis_server.start()
        await client.connection_pool.disconnect()  # our own connections died with the server
        produced |= await produce(client, stream, range(TOTAL // 2, TOTAL))
        # SIGKILL mid-batch: its in-flight entries stay pending under its consumer name.
        orphaned = await kill_holding_entries(first, client, stream)
        second = start_consumer(config_path)
        await second.ready()
        await wait_for("every entry settled (lag 0, none pending)", all_settled(client, stream), 120)
        assert second.stop() == 0, second.log_path.read_text()[-3000:]
        # The killed consumer's name is all that is left: the survivor claimed its entries and
        # removed its own name on a clean stop.
        consumers = await client.xinfo_consumers(stream, GROUP)
        assert [c["pending"] for c in consumers] == [0], consumers
        assert orphaned > 0 and "claimed" in second.log_path.read_text()
        await assert_dead_letters(client, stream, produced)
        assert (await client.xpending(stream, GROUP))["pending"] == 0
    finally:
        await client.aclose()
    await assert_stored_once(config["engine"], stream, produced)


async def assert_dead_letters(
    client: Redis, stream: str, produced: dict[str, tuple[str | None, str | None]]
) -> None:
    letters = await client.xrange(f"{stream}:dlq")
    counts = Counter(fields[b"source_id"].decode() for _, fields in letters)
    poison = {entry_id: kind for entry_id, (kind, _) in produced.items() if kind}
    assert len(poison) == TOTAL // 100
    assert set(counts) == set(poison), "dead letters differ from the poison entries"
    assert max(counts.values()) == 1, "an entry was dead-lettered twice"
    codes = {poison[f[b"source_id"].decode()]: f[b"error"].decode() for _, f in letters}
    assert codes["not_utf8"] == "entry_not_utf8" and codes["bad_json"] == "payload_bad_json"
    assert codes["no_bank"] == "bank_missing" and "large" in codes["too_large"]


async def assert_stored_once(
    engine: dict[str, Any], stream: str, produced: dict[str, tuple[str | None, str | None]]
) -> None:
    """Each valid entry's key is in its bank (a re-retain deduplicates) and nothing else is."""
    by_bank: dict[str, list[str]] = {}
    for entry_id, (kind, bank) in produced.items():
        if kind is None and bank is not None:
            by_bank.setdefault(bank, []).append(f"{stream}:{entry_id}")
    assert sum(len(keys) for keys in by_bank.values()) == TOTAL - TOTAL // 100
    async with Astrocyte.from_dict(engine) as brain:
        for bank, keys in by_bank.items():
            assert (await brain.bank_stats(bank)).memory_count == len(keys), bank
            for start in range(0, len(keys), 2_000):
                requests = [
                    RetainRequest(content="verify", bank_id=bank, idempotency_key=key)
                    for key in keys[start : start + 2_000]
                ]
                results = await brain.retain_many(requests)
                missing = [r for r in results if not getattr(r, "deduplicated", False)]
                assert not missing, f"{len(missing)} valid entries of {bank} were not stored"
