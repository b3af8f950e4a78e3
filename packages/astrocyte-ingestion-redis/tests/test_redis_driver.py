"""Driver behaviour against a real redis-server: pending recovery, delivery limits, dead letters,
health figures, fatal errors, ACL credentials, and the whole path through the core supervisor."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from astrocyte.errors import NotFoundError
from astrocyte.ingest.supervisor import IngestSupervisor, RestartPolicy
from astrocyte.testing.ingest_contract import REJECT_PREFIX, ContractSink, FlakySink
from astrocyte_ingestion_redis import RedisStreamDriver
from astrocyte_ingestion_redis.testing import RedisServer
from conftest import eventually
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

GROUP = "tests"


def make_driver(server: RedisServer, stream: str, sink: Any, **overrides: Any) -> RedisStreamDriver:
    config = {
        "url": server.url,
        "streams": [stream],
        "group": GROUP,
        "block_ms": 100,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "stats_interval_s": 0.05,
        **overrides,
    }
    return RedisStreamDriver("tests", RedisStreamDriver.validate_config(config), sink=sink)


class Running:
    """A started driver, stopped at the end of the ``async with``."""

    def __init__(self, driver: RedisStreamDriver) -> None:
        self.driver = driver
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisStreamDriver:
        self.task = asyncio.create_task(self.driver.start())
        return self.driver

    async def __aexit__(self, *exc: object) -> None:
        await self.driver.stop(2.0)
        assert self.task is not None
        await asyncio.wait({self.task}, timeout=3.0)


async def add(client: Redis, stream: str, content: str, **fields: str) -> str:
    entry_id = await client.xadd(stream, {"content": content, "bank_id": "tests", **fields})
    return entry_id.decode()


async def dead_letters(client: Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(f"{stream}:dlq")]


async def test_own_pending_entries_are_read_first_on_start(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for i in range(5):
        await add(redis_client, stream, f"left-{i}")
    # A previous run of consumer "pod-0" read them and crashed before acknowledging.
    await redis_client.xreadgroup(GROUP, "pod-0", {stream: ">"}, count=5)
    sink = ContractSink()
    # A claim would wait an hour: only the pending-first read can recover them this fast.
    async with Running(make_driver(redis_server, stream, sink, consumer="pod-0", claim_idle_ms=3_600_000)):
        await eventually("the pending entries stored", lambda: len(sink.stored_contents) == 5, within=5)
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 0


async def test_an_entry_delivered_too_often_is_dead_lettered_with_its_attempts(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry_id = await add(redis_client, stream, "crashes every consumer", note="kept")
    await redis_client.xreadgroup(GROUP, "crashed", {stream: ">"}, count=1)
    await redis_client.xclaim(stream, GROUP, "crashed", 0, [entry_id], retrycount=7)
    sink = ContractSink()
    async with Running(make_driver(redis_server, stream, sink, consumer="crashed", max_deliveries=5)):
        await eventually("a dead letter", lambda: _has_letters(redis_client, stream, 1))
    [letter] = await dead_letters(redis_client, stream)
    assert letter[b"error"] == b"max_deliveries_exceeded"
    assert int(letter[b"attempts"]) == 8  # seven before, plus this delivery
    assert letter[b"source_id"] == entry_id.encode() and letter[b"source_stream"] == stream.encode()
    assert letter[b"orig:content"] == b"crashes every consumer" and letter[b"orig:note"] == b"kept"
    assert sink.stored_contents == {}
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 0


class GatedSink:
    """A ContractSink whose answers wait for ``gate``: a batch stays in flight until the test says."""

    def __init__(self) -> None:
        self.inner = ContractSink()
        self.gate = asyncio.Event()
        self.calls = 0

    async def submit(self, batch: Any) -> Any:
        self.calls += 1
        await self.gate.wait()
        return await self.inner.submit(batch)


async def test_reconnects_during_a_slow_batch_do_not_count_extra_deliveries(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    # After a reconnect the driver re-reads its own pending entries, and each such read counts a
    # delivery in Redis. Entries a batch still holds must not be re-read meanwhile: three flaps
    # during one slow batch would otherwise pass max_deliveries and dead-letter healthy entries.
    sink = GatedSink()
    for i in range(5):
        await add(redis_client, stream, f"slow-{i}")
    async with Running(make_driver(redis_server, stream, sink, max_deliveries=2, batch_size=10)) as driver:
        await eventually("a batch in flight", lambda: sink.calls == 1)
        for _ in range(3):
            await redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await eventually("reconnected", lambda: _health_is(driver))
            await asyncio.sleep(0.3)  # time for a recovery read, were one to happen
        rows = await redis_client.xpending_range(stream, GROUP, "-", "+", 10)
        assert [row["times_delivered"] for row in rows] == [1] * 5
        sink.gate.set()
        await eventually("all stored", lambda: len(sink.inner.stored_contents) == 5)
        await eventually("nothing pending", lambda: _pending_is(redis_client, stream, 0))
    assert await dead_letters(redis_client, stream) == []


async def _fails_to_start(
    driver: RedisStreamDriver, error: type[Exception], match: str | None = None
) -> None:
    """A fatal error: start raises it, health says failed, and stop still returns."""
    with pytest.raises(error, match=match):
        await asyncio.wait_for(driver.start(), timeout=10)
    assert (await driver.health()).state == "failed"
    await driver.stop(1.0)


async def _has_letters(client: Redis, stream: str, count: int) -> bool:
    return len(await dead_letters(client, stream)) >= count


async def test_a_rejected_entry_is_dead_lettered_with_the_sink_reason(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    sink = ContractSink()
    async with Running(make_driver(redis_server, stream, sink, dead_letter_maxlen=1000)):
        await add(redis_client, stream, f"{REJECT_PREFIX}nope")
        await add(redis_client, stream, "fine")
        await eventually("the good entry stored", lambda: sink.stored_contents["fine"] == 1)
        await eventually("the rejection dead-lettered", lambda: _has_letters(redis_client, stream, 1))
    [letter] = await dead_letters(redis_client, stream)
    assert letter[b"error"] == b"contract_rejected" and letter[b"attempts"] == b"1"
    assert letter[b"reason"] and letter[b"source"] == b"tests" and letter[b"group"] == GROUP.encode()


async def test_reading_pauses_while_the_sink_fails(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    inner = ContractSink()
    flaky = FlakySink(inner, fail_for_seconds=1.5)
    contents = [f"paused-{i}" for i in range(50)]
    for content in contents:
        await add(redis_client, stream, content)
    async with Running(make_driver(redis_server, stream, flaky, batch_size=10, concurrency=1)) as driver:
        await eventually("the sink failing", lambda: flaky.failed_calls >= 2)
        health = await driver.health()
        assert health.state == "degraded" and "sink failing" in (health.detail or "")
        # Only the failing batch was read: the rest waits in the stream, not in a buffer.
        assert (await redis_client.xpending(stream, GROUP))["pending"] == 10
        await eventually("everything stored once the sink recovers", lambda: len(inner.stored_contents) == 50)
        await eventually("running again", lambda: _health_is(driver, pending=0))
    assert set(inner.stored_contents) == set(contents)


async def test_health_reports_pending_and_lag(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    sink = ContractSink()
    sink.gate.clear()
    for i in range(10):
        await add(redis_client, stream, f"lagging-{i}")
    async with Running(make_driver(redis_server, stream, sink, batch_size=4, concurrency=1)) as driver:

        async def figures_are(pending: int, lag: int) -> bool:
            health = await driver.health()
            return health.state == "running" and (health.pending, health.lag) == (pending, lag)

        await eventually("4 pending and 6 behind", lambda: figures_are(4, 6))
        sink.gate.set()
        await eventually("nothing pending, nothing behind", lambda: figures_are(0, 0))


async def test_names_of_dead_consumers_are_tidied_but_not_their_entries(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await redis_client.xgroup_createconsumer(stream, GROUP, "ghost")
    await add(redis_client, stream, "held by a consumer that will not come back")
    await redis_client.xreadgroup(GROUP, "holder", {stream: ">"}, count=1)
    await asyncio.sleep(1.1)
    driver = make_driver(
        redis_server, stream, ContractSink(), claim_idle_ms=3_600_000, forget_idle_consumers_ms=1_000
    )
    async with Running(driver):

        async def names() -> set[str]:
            return {c["name"].decode() for c in await redis_client.xinfo_consumers(stream, GROUP)}

        await eventually("the ghost forgotten", lambda: _lacks(names(), "ghost"))
        assert "holder" in await names()  # it still holds an entry (claimed after claim_idle_ms)


async def _lacks(names: Awaitable[set[str]], name: str) -> bool:
    return name not in await names


async def test_a_deleted_pending_entry_is_acknowledged(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    gone = await add(redis_client, stream, "trimmed away")
    await redis_client.xreadgroup(GROUP, "pod-1", {stream: ">"}, count=1)
    await redis_client.xdel(stream, gone)
    sink = ContractSink()
    async with Running(make_driver(redis_server, stream, sink, consumer="pod-1")):
        await eventually("the pending list emptied", lambda: _pending_is(redis_client, stream, 0))
    assert sink.stored_contents == {} and await dead_letters(redis_client, stream) == []


async def _health_is(driver: RedisStreamDriver, **expected: int) -> bool:
    health = await driver.health()
    return health.state == "running" and all(getattr(health, k) == v for k, v in expected.items())


async def _pending_is(client: Redis, stream: str, count: int) -> bool:
    return (await client.xpending(stream, GROUP))["pending"] == count


async def test_a_configured_idempotency_field_deduplicates_producer_retries(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    sink = ContractSink()
    driver = make_driver(redis_server, stream, sink, fields={"idempotency_key": "event_id"})
    async with Running(driver):
        await add(redis_client, stream, "sent twice", event_id="evt-1")
        await add(redis_client, stream, "sent twice", event_id="evt-1")
        await eventually("both settled", lambda: sink.duplicate_contents["sent twice"] == 1)
        await eventually("both acknowledged", lambda: _pending_is(redis_client, stream, 0))
    assert sink.stored_contents["sent twice"] == 1
    assert sink.keys_by_content["sent twice"] == {"evt-1"}


async def test_a_key_that_is_not_a_stream_is_fatal(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.set(stream, "not a stream")
    driver = make_driver(redis_server, stream, ContractSink())
    await _fails_to_start(driver, ResponseError, "WRONGTYPE")


async def test_a_missing_group_is_fatal_when_the_driver_may_not_create_it(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await add(redis_client, stream, "exists")
    driver = make_driver(redis_server, stream, ContractSink(), create_group=False)
    await _fails_to_start(driver, ResponseError)


# The least a source needs, as the README documents it (scripts are checked command by command).
LEAST_PRIVILEGE = (
    "+@connection +ping +type +xlen +xrange +xreadgroup +xack +xadd +xautoclaim +xpending "
    "+xinfo|groups +xinfo|stream +xinfo|consumers +xgroup|create +xgroup|delconsumer +eval "
    "+zadd +zscore +zremrangebyscore"
).split()


@pytest.fixture
async def acl_user(redis_client: Redis) -> AsyncIterator[str]:
    rules = ["on", ">s3cret-pass", "resetkeys", "~events-*", *LEAST_PRIVILEGE]
    await redis_client.execute_command("ACL", "SETUSER", "ingest", *rules)
    yield "ingest"
    await redis_client.execute_command("ACL", "DELUSER", "ingest")


async def test_acl_credentials_from_the_environment(
    redis_server: RedisServer,
    redis_client: Redis,
    stream: str,
    acl_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_REDIS_USER", acl_user)
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "s3cret-pass")
    sink = ContractSink()
    creds = {"username_env": "TEST_REDIS_USER", "password_env": "TEST_REDIS_PASSWORD"}
    async with Running(make_driver(redis_server, stream, sink, **creds)) as driver:
        await add(redis_client, stream, "authenticated")
        await redis_client.xadd(stream, {"payload": "{broken"})
        await eventually("stored", lambda: sink.stored_contents["authenticated"] == 1)
        await eventually("the poison dead-lettered", lambda: _has_letters(redis_client, stream, 1))
        await eventually("health figures", lambda: _health_is(driver, pending=0, lag=0))
    assert await redis_client.xinfo_consumers(stream, GROUP) == []  # it removed its own name
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "wrong")
    refused = make_driver(redis_server, stream, sink, **creds)
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(refused.start(), timeout=10)
    health = await refused.health()
    assert health.state == "failed" and "wrong" not in (health.detail or "")
    await refused.stop(1.0)


async def test_a_missing_acl_grant_is_fatal(
    redis_server: RedisServer,
    redis_client: Redis,
    stream: str,
    acl_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await redis_client.execute_command("ACL", "SETUSER", acl_user, "-xreadgroup")
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "s3cret-pass")
    driver = make_driver(
        redis_server, stream, ContractSink(), username=acl_user, password_env="TEST_REDIS_PASSWORD"
    )
    await _fails_to_start(driver, NoPermissionError)


async def test_entries_become_recallable_through_the_core_supervisor(
    redis_server: RedisServer, redis_client: Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="astrocyte.ingest.sink")
    sources = {
        "agent-events": {
            "type": "stream",
            "driver": "redis",
            "required": True,
            "bank_template": "user-{user}",
            "url": redis_server.url,
            "streams": [stream],
            "block_ms": 100,
            "fields": {"metadata_fields": ["user"]},
        }
    }
    async with Astrocyte.from_dict({"store": "memory", "embedder": "hashing"}) as brain:
        registry = CollectorRegistry()
        supervisor = IngestSupervisor.from_mapping(
            brain,
            sources,
            poll_interval=0.1,
            registry=registry,
            restart=RestartPolicy(initial_delay=0.1),
        )
        async with supervisor:
            payload = {"content": "Ana's flight to Lisbon leaves at 9", "tags": ["travel"]}
            await redis_client.xadd(stream, {"payload": json.dumps(payload), "user": "ana"})
            await redis_client.xadd(stream, {"content": "no user, no bank"})
            bad_json = (await redis_client.xadd(stream, {"payload": "{not json"})).decode()

            async def recallable() -> bool:
                try:
                    result = await brain.recall("flight to Lisbon", bank_id="user-ana")
                except NotFoundError:  # until the first memory creates the bank
                    return False
                return any("Lisbon" in hit.text for hit in result.hits)

            await eventually("the memory recallable", recallable)
            await eventually(
                "the bankless and the bad JSON entry dead-lettered",
                lambda: _has_letters(redis_client, stream, 2),
            )
            await eventually("health settled", lambda: _source_settled(supervisor))
            health = supervisor.health()
            # The bad JSON never reached the sink; the driver's dead letter is counted all the same.
            assert health.ready and health.sources["agent-events"].counters["rejected"] == 2
            rejected = {"source": "agent-events", "outcome": "rejected"}
            assert registry.get_sample_value("astrocyte_ingest_messages_total", rejected) == 2
        lines = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("ingest message rejected")
        ]
        assert (
            f"ingest message rejected: source agent-events, entry {stream}:{bad_json}: payload_bad_json"
            in "\n".join(lines)
        )
        assert any("bank_missing" in line for line in lines)
        [hit] = (await brain.recall("flight to Lisbon", bank_id="user-ana")).hits
        assert hit.tags == ["travel"] and hit.source == "agent-events" and hit.metadata == {"user": "ana"}


def _source_settled(supervisor: IngestSupervisor) -> bool:
    source = supervisor.health().sources["agent-events"]
    return source.state == "running" and source.pending == 0 and source.lag == 0
