"""Two consumers in one group: they share the work, and when one dies the other claims its
pending entries (XAUTOCLAIM after ``claim_idle_ms``)."""

from __future__ import annotations

import asyncio
from typing import Any

from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_redis import RedisStreamDriver
from astrocyte_ingestion_redis.testing import RedisServer
from conftest import eventually
from redis.asyncio import Redis
from redis.exceptions import ResponseError

GROUP = "pair"


def build(server: RedisServer, stream: str, sink: Any, **overrides: Any) -> RedisStreamDriver:
    """A driver with a generated consumer name (as replicas have by default)."""
    config = {
        "url": server.url,
        "streams": [stream],
        "group": GROUP,
        "batch_size": 20,
        "block_ms": 100,
        "claim_idle_ms": 500,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        **overrides,
    }
    return RedisStreamDriver("pair", RedisStreamDriver.validate_config(config), sink=sink)


async def publish(client: Redis, stream: str, label: str, count: int) -> list[str]:
    contents = [f"{label}-{i}" for i in range(count)]
    async with client.pipeline(transaction=False) as pipe:
        for content in contents:
            pipe.xadd(stream, {"content": content, "bank_id": "pair-bank"})
        await pipe.execute()
    return contents


async def test_two_consumers_share_the_work(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    first_sink, second_sink = ContractSink(latency=0.02), ContractSink(latency=0.02)
    first, second = build(redis_server, stream, first_sink), build(redis_server, stream, second_sink)
    assert first.consumer != second.consumer
    tasks = [asyncio.create_task(first.start()), asyncio.create_task(second.start())]
    contents = await publish(redis_client, stream, "shared", 1_000)

    def all_stored() -> bool:
        return all(first_sink.stored_contents[c] or second_sink.stored_contents[c] for c in contents)

    await eventually("every entry stored by one of the two", all_stored)
    await first.stop(2.0)
    await second.stop(2.0)
    await asyncio.gather(*tasks)
    firsts, seconds = set(first_sink.stored_contents), set(second_sink.stored_contents)
    assert firsts and seconds, "one consumer did all the work"
    assert not firsts & seconds, "an entry was delivered to both consumers"
    assert firsts | seconds == set(contents)
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 0


async def test_survivor_claims_the_pending_entries_of_a_dead_consumer(
    redis_server: RedisServer, redis_client: Redis, stream: str
) -> None:
    stuck = ContractSink()
    stuck.gate.clear()  # the doomed consumer never gets an answer from its sink
    doomed = build(redis_server, stream, stuck, concurrency=1)
    doomed_task = asyncio.create_task(doomed.start())
    contents = await publish(redis_client, stream, "orphaned", 20)

    async def doomed_holds_entries() -> bool:
        try:
            summary = await redis_client.xpending(stream, GROUP)
        except ResponseError:  # NOGROUP until the driver has created the group
            return False
        return any(c["name"].decode() == doomed.consumer and c["pending"] for c in summary["consumers"])

    await eventually("the doomed consumer to hold pending entries", doomed_holds_entries)
    # It dies with its batch unanswered: nothing acknowledged, as after a crash (the chaos test
    # SIGKILLs a real consumer process).
    await doomed.stop(0.0)
    await doomed_task

    survivor_sink = ContractSink()
    survivor = build(redis_server, stream, survivor_sink)
    survivor_task = asyncio.create_task(survivor.start())
    await eventually(
        "the survivor to store the orphaned entries",
        lambda: set(survivor_sink.stored_contents) == set(contents),
    )
    assert (await redis_client.xpending(stream, GROUP))["pending"] == 0
    await survivor.stop(2.0)
    await survivor_task
    assert stuck.stored_contents == {}, "the dead consumer stored nothing"
