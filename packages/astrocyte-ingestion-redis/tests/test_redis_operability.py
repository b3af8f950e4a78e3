"""What an operator sees and what is never lost when Redis misbehaves: dead-letter writes failing,
Redis restarting without its data, a consumer group destroyed mid-run, a trimmed stream, a paused
server, pending entries deleted under a dead consumer. Each against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_redis import RedisStreamDriver
from astrocyte_ingestion_redis.group import ConsumerGroup, Delivered
from astrocyte_ingestion_redis.testing import RedisServer
from conftest import eventually
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from test_redis_driver import GROUP, Running, _fails_to_start, _pending_is, add, dead_letters, make_driver


@pytest.fixture
def volatile_server(redis_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A private server without persistence: a restart comes back empty."""
    server = RedisServer(redis_bin, tmp_path / "redis", persistent=False)
    server.start()
    yield server
    server.stop()


async def _produce(client: Redis, stream: str, total: int, poison_every: int) -> tuple[list[str], list[str]]:
    """``total`` entries, every ``poison_every``-th one bad JSON: (valid contents, poison entry ids)."""
    valid, poison = [], []
    async with client.pipeline(transaction=False) as pipe:
        for i in range(total):
            if i % poison_every == poison_every // 2:
                pipe.xadd(stream, {"payload": f'{{"content": "cut off {i}'})
            else:
                pipe.xadd(stream, {"content": f"entry {i}", "bank_id": "tests"})
        ids = await pipe.execute()
    for i, entry_id in enumerate(ids):
        if i % poison_every == poison_every // 2:
            poison.append(entry_id.decode())
        else:
            valid.append(f"entry {i}")
    return valid, poison


def _stored_all(sink: ContractSink, contents: list[str]) -> bool:
    return all(sink.stored_contents[c] for c in contents)


async def test_valid_entries_are_stored_although_dead_letters_fail_and_redis_loses_its_data(
    volatile_server: RedisServer, stream: str
) -> None:
    # The repro made deterministic: every dead-letter write fails (a key of the wrong type
    # where the dead-letter stream goes), then Redis is killed and comes back empty. Dead-lettering
    # first used to drop the whole batch back to a pending list that no longer exists: 0 of 495.
    client = Redis.from_url(volatile_server.url)
    sink = ContractSink()
    try:
        async with Running(make_driver(volatile_server, stream, sink, batch_size=500)) as driver:
            await eventually("running", lambda: _state_is(driver, "running"))
            await client.set(f"{stream}:dlq", "not a stream")
            valid, poison = await _produce(client, stream, 500, poison_every=100)
            await eventually("every valid entry stored", lambda: _stored_all(sink, valid))
            await eventually("degraded: dead letters failing", lambda: _state_is(driver, "degraded"))
            assert "dead-letter" in ((await driver.health()).detail or "")
            assert (await client.xpending(stream, GROUP))["pending"] == len(poison)  # kept, not acked

            await asyncio.to_thread(volatile_server.stop, signal.SIGKILL)
            await asyncio.to_thread(volatile_server.start)
            await eventually("the loss reported", lambda: _event(driver, "stream_lost", 1))
            await eventually("running again", lambda: _state_is(driver, "running"))
            health = await driver.health()
            assert "were gone (Redis restarted without persistence" in (health.detail or "")
    finally:
        await client.aclose()
    assert len(valid) == 495 and sum(sink.stored_contents.values()) == 495


async def test_a_dead_letter_key_of_the_wrong_type_is_refused_at_start(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    await redis_client.set(f"{stream}:dlq", "someone else's key")
    driver = make_driver(redis_server, stream, ContractSink())
    await _fails_to_start(
        driver, ResponseError, "WRONGTYPE the dead-letter key .* holds a string, not a stream"
    )
    assert await redis_client.get(f"{stream}:dlq") == b"someone else's key"  # left alone


async def test_a_failing_dead_letter_script_leaves_the_entry_pending(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    # A Redis script is not rolled back: an XACK before a failing XADD used to make the entry vanish
    # from both the stream's pending list and the dead-letter stream.
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry_id = await add(redis_client, stream, "poison for the test")
    await redis_client.xreadgroup(GROUP, "pod-0", {stream: ">"}, count=1)
    await redis_client.set(f"{stream}:dlq", "wrong type")
    config = RedisStreamDriver.validate_config({"url": redis_server.url, "streams": [stream], "group": GROUP})
    group = ConsumerGroup(redis_client, config, "pod-0", "tests")
    item = Delivered(stream, entry_id, {b"content": b"x"})
    with pytest.raises(ResponseError, match="DEADLETTER_WRONGTYPE"):
        await group.dead_letter(item, "bad", "bad")
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 1
    await redis_client.delete(f"{stream}:dlq")
    assert await group.dead_letter(item, "bad", "bad") == 1
    assert await group.dead_letter(item, "bad", "again") == 0  # no longer pending: nothing written
    assert len(await dead_letters(redis_client, stream)) == 1


async def test_a_destroyed_group_is_recreated_and_reported_without_a_second_dead_letter(
    redis_server: RedisServer, redis_client: Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ContractSink()
    caplog.set_level(logging.INFO, logger="astrocyte_ingestion_redis")
    async with Running(make_driver(redis_server, stream, sink, batch_size=50)) as driver:
        valid, poison = await _produce(redis_client, stream, 400, poison_every=50)
        await eventually("all stored", lambda: _stored_all(sink, valid))
        await eventually("all dead-lettered", lambda: _letters_are(redis_client, stream, len(poison)))
        await redis_client.xgroup_destroy(stream, GROUP)
        await eventually("everything read again", lambda: all(sink.duplicate_contents[c] for c in valid))
        await eventually("nothing pending", lambda: _pending_is(redis_client, stream, 0))
        await asyncio.sleep(0.3)
        health = await driver.health()
        assert health.state == "running"
        assert "was missing on stream" in (health.detail or "") and "recreated at id 0" in (
            health.detail or ""
        )
        assert health.events["group_recreated"] == 1 and health.events["entries_reread"] == 400
    refs = Counter(fields[b"source_id"].decode() for fields in await dead_letters(redis_client, stream))
    assert refs == Counter(poison)  # each poison entry exactly once
    assert sum(sink.stored_contents.values()) == len(valid)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("consumer group 'tests' is missing although Redis answers" in w for w in warnings)
    assert any("400 entries will be read again" in w for w in warnings)
    assert not any("unreachable" in w for w in warnings)


async def test_lag_is_true_after_a_trim(redis_server: RedisServer, redis_client: Redis, stream: str) -> None:
    # Redis 7.0 keeps counting trimmed, never-delivered entries in XINFO GROUPS lag, forever.
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for i in range(100):
        await add(redis_client, stream, f"entry {i}")
    await redis_client.xreadgroup(GROUP, "c", {stream: ">"}, count=50)
    config = RedisStreamDriver.validate_config({"url": redis_server.url, "streams": [stream], "group": GROUP})
    group = ConsumerGroup(redis_client, config, "c", "tests")
    assert (await group.stats()).lag == 50  # nothing removed yet: Redis's own figure
    await redis_client.xtrim(stream, maxlen=30, approximate=False)
    assert (await group.stats()).lag == 30  # every remaining entry is still to be delivered
    await redis_client.xreadgroup(GROUP, "c", {stream: ">"}, count=10)
    assert (await group.stats()).lag is None  # behind, after a trim: Redis cannot tell
    await redis_client.xreadgroup(GROUP, "c", {stream: ">"}, count=100)
    assert (await group.stats()).lag == 0  # caught up (Redis says 20)


async def test_a_paused_server_reads_degraded_within_the_block_time(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    sink = ContractSink()
    async with Running(make_driver(redis_server, stream, sink, block_ms=200)) as driver:
        await eventually("running", lambda: _state_is(driver, "running"))
        await redis_client.execute_command("CLIENT", "PAUSE", "2500", "WRITE")
        await eventually("degraded while paused", lambda: _state_is(driver, "degraded"), within=2.0)
        assert "has not answered" in ((await driver.health()).detail or "")
        await eventually("running after the pause", lambda: _state_is(driver, "running"), within=10)
        await add(redis_client, stream, "after the pause")
        await eventually("consuming again", lambda: sink.stored_contents["after the pause"] == 1)
        assert (await driver.health()).events["stalled"] == 1


async def test_pending_entries_deleted_under_a_dead_consumer_are_logged_by_the_claim(
    redis_server: RedisServer, redis_client: Redis, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="astrocyte_ingestion_redis")
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ids = [await add(redis_client, stream, f"held {i}") for i in range(3)]
    await redis_client.xreadgroup(GROUP, "dead-pod", {stream: ">"}, count=3)
    await redis_client.xdel(stream, ids[0], ids[1])
    sink = ContractSink()
    async with Running(make_driver(redis_server, stream, sink, claim_idle_ms=100)) as driver:
        await eventually(
            "the surviving entry claimed and stored", lambda: sink.stored_contents["held 2"] == 1
        )
        await eventually("the deletions counted", lambda: _event(driver, "pending_deleted", 2))
    [warning] = [r.getMessage() for r in caplog.records if "deleted from stream" in r.getMessage()]
    assert ids[0] in warning and ids[1] in warning and "they are lost" in warning


async def _state_is(driver: RedisStreamDriver, state: str) -> bool:
    return (await driver.health()).state == state


async def _event(driver: RedisStreamDriver, name: str, count: int) -> bool:
    return (await driver.health()).events.get(name, 0) == count


async def _letters_are(client: Redis, stream: str, count: int) -> bool:
    return len(await dead_letters(client, stream)) == count
