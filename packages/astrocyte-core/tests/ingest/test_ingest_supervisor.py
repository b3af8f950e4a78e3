"""The supervisor starts drivers, restarts crashed ones with backoff and reports health."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from astrocyte.ingest.config import validate_sources
from astrocyte.ingest.supervisor import IngestSupervisor, RestartPolicy
from ingest_reference_driver import TRANSPORTS, LogTransport
from ingest_test_drivers import FAST_RESTART, STARTS, FlakyDriver
from prometheus_client import CollectorRegistry

FLAKY = "ingest_test_drivers:FlakyDriver"
QUEUE = "ingest_reference_driver:QueueDriver"


async def eventually(
    what: str, check: Callable[[], bool], within: float = 15.0, seen: Callable[[], object] | None = None
) -> None:
    """Wait for ``check``; on time-out say what ``seen`` shows. Generous: it returns at once when
    true, and a loaded CI machine must not turn a wait into a failure."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; saw {seen()!r}" if seen else ""))
        await asyncio.sleep(0.02)


def supervisor(
    brain: Any, registry: CollectorRegistry, sources: dict[str, Any], **kwargs: Any
) -> IngestSupervisor:
    kwargs.setdefault("restart", FAST_RESTART)
    return IngestSupervisor(brain, validate_sources(sources), poll_interval=0.05, registry=registry, **kwargs)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_crashed_driver_is_restarted_and_shown_in_health(memory_brain, registry) -> None:
    STARTS.pop("crashy", None)
    sup = supervisor(memory_brain, registry, {"crashy": {"type": "stream", "driver": FLAKY, "crashes": 2}})
    async with sup:
        await eventually(
            "the driver to run after two crashes", lambda: sup.health().sources["crashy"].healthy
        )
        health = sup.health().sources["crashy"]
    assert STARTS["crashy"] == 3
    assert health.restarts == 2
    assert health.consecutive_failures == 2
    assert health.last_error == "crashed: RuntimeError: boom"
    assert health.last_error_at is not None
    assert health.lag == 7
    assert sample(registry, "astrocyte_ingest_driver_restarts_total", source="crashy") == 2
    assert sup.health().sources["crashy"].state == "stopped"


async def test_driver_reporting_failed_health_is_rebuilt(memory_brain, registry) -> None:
    FlakyDriver.fatal_seen.pop("fatal", None)
    sup = supervisor(
        memory_brain, registry, {"fatal": {"type": "stream", "driver": FLAKY, "fatal_reports": 1}}
    )
    async with sup:
        await eventually(
            "a restart after the fatal report", lambda: sup.health().sources["fatal"].restarts == 1
        )
        await eventually("running again", lambda: sup.health().sources["fatal"].healthy)
        assert sup.health().sources["fatal"].last_error == "fatal: lost the consumer group"


async def test_health_shows_failed_between_crash_and_restart(memory_brain, registry) -> None:
    STARTS.pop("down", None)
    slow = RestartPolicy(initial_delay=5.0, jitter=0.0)
    sup = supervisor(
        memory_brain, registry, {"down": {"type": "stream", "driver": FLAKY, "crashes": 1}}, restart=slow
    )
    async with sup:
        await eventually("the crash to show", lambda: sup.health().sources["down"].state == "failed")
        body = sup.health().to_dict(include_errors=False)
    assert body["sources"]["down"]["state"] == "failed"
    assert body["sources"]["down"]["last_error"] is None  # error text is for admins only
    assert body["sources"]["down"]["consecutive_failures"] == 1


def test_backoff_grows_exponentially_within_jitter() -> None:
    policy = RestartPolicy(initial_delay=0.5, max_delay=8.0, multiplier=2.0, jitter=0.2)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(set(delays)) > 1  # jittered, not lockstep


async def test_ready_is_false_only_while_a_required_source_is_unhealthy(memory_brain, registry) -> None:
    STARTS.pop("optional", None)
    STARTS.pop("vital", None)
    slow = RestartPolicy(initial_delay=0.4, jitter=0.0)
    sources = {
        "optional": {"type": "stream", "driver": FLAKY, "crashes": 100},
        "vital": {"type": "stream", "driver": FLAKY, "crashes": 1, "required": True},
    }
    sup = supervisor(memory_brain, registry, sources, restart=slow)
    assert sup.health().ready is False  # nothing runs before start
    async with sup:
        await eventually(
            "the required source to crash", lambda: sup.health().sources["vital"].state == "failed"
        )
        assert sup.health().ready is False
        await eventually("the required source to recover", lambda: sup.health().ready)
        assert sup.health().sources["optional"].healthy is False
        assert sup.health().sources["vital"].required is True


async def test_stop_gives_up_on_a_driver_that_ignores_its_deadline(memory_brain, registry) -> None:
    sup = supervisor(
        memory_brain, registry, {"hang": {"type": "stream", "driver": FLAKY, "stop_hangs": True}}
    )
    await sup.start()
    await eventually("running", lambda: sup.health().sources["hang"].healthy)
    began = time.monotonic()
    await sup.stop(deadline=0.2)
    assert time.monotonic() - began < 3.0
    assert sup.health().sources["hang"].state == "stopped"


async def test_messages_flow_into_the_store_with_counters_and_metrics(memory_brain, registry) -> None:
    transport = TRANSPORTS["sup-e2e"] = LogTransport("sup-e2e")
    try:
        for i in range(20):
            transport.append(json.dumps({"content": f"fact number {i}", "bank_id": "ingest-e2e"}).encode())
        transport.append(b"\xff not utf-8")
        transport.append(json.dumps({"content": "fact number 0", "bank_id": "ingest-e2e"}).encode())
        sup = supervisor(
            memory_brain, registry, {"e2e": {"type": "stream", "driver": QUEUE, "transport": "sup-e2e"}}
        )
        async with sup:
            await eventually("every entry settled", lambda: transport.committed == 22)
            await eventually("health polled", lambda: sup.health().sources["e2e"].lag == 0)
            health = sup.health().sources["e2e"]
        stats = await memory_brain.bank_stats("ingest-e2e")
    finally:
        TRANSPORTS.pop("sup-e2e")
    assert stats.memory_count == 21  # the repeated content has its own transport key, so it is new
    # The undecodable entry never reached the sink; the driver reported its dead letter.
    assert health.counters == {"stored": 21, "duplicate": 0, "rejected": 1, "failed": 0}
    assert health.last_success_at is not None
    assert transport.dead_letters == [("sup-e2e:20", "undecodable")]
    assert sample(registry, "astrocyte_ingest_messages_total", source="e2e", outcome="stored") == 21
    assert sample(registry, "astrocyte_ingest_messages_total", source="e2e", outcome="rejected") == 1
    assert sample(registry, "astrocyte_ingest_batch_seconds_count", source="e2e") >= 1
    assert sample(registry, "astrocyte_ingest_lag", source="e2e") == 0


async def test_a_failing_sink_shows_the_source_degraded(make_memory_brain, registry) -> None:
    transport = TRANSPORTS["sup-degraded"] = LogTransport("sup-degraded")
    brain = make_memory_brain(limits={"rate": {"retain": {"per_second": 0.001, "burst": 1}}})
    try:
        async with brain:
            for i in range(3):
                transport.append(json.dumps({"content": f"fact {i}", "bank_id": "ingest-rate"}).encode())
            sources = {
                "rl": {"type": "stream", "driver": QUEUE, "transport": "sup-degraded", "batch_size": 1}
            }
            sup = supervisor(brain, registry, sources)
            async with sup:
                await eventually("degraded", lambda: sup.health().sources["rl"].state == "degraded")
                health = sup.health().sources["rl"]
    finally:
        TRANSPORTS.pop("sup-degraded")
    assert health.counters["stored"] == 1 and health.counters["failed"] >= 1
    assert health.last_error is not None and health.last_error.startswith("sink: rate_limited")
    assert health.consecutive_failures >= 1
    assert transport.committed == 1  # nothing acknowledged past the failing entry


async def test_a_driver_that_cannot_be_built_is_retried(memory_brain, registry) -> None:
    sources = validate_sources({"nobuild": {"type": "stream", "driver": FLAKY}})

    class Exploding(FlakyDriver):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("cannot build")

    source = sources["nobuild"]
    object.__setattr__(source, "driver_class", Exploding)
    sup = IngestSupervisor(memory_brain, sources, restart=FAST_RESTART, poll_interval=0.05, registry=registry)
    async with sup:
        await eventually("two failed builds", lambda: sup.health().sources["nobuild"].restarts >= 2)
    assert sup.health().sources["nobuild"].last_error == "build: ValueError: cannot build"


async def test_a_start_that_runs_until_stopped_is_supervised(memory_brain, registry) -> None:
    STARTS.pop("loop", None)
    sources = {"loop": {"type": "stream", "driver": FLAKY, "run_in_start": True, "die_after": 0.2}}
    sup = supervisor(memory_brain, registry, sources)
    async with sup:
        await eventually(
            "the loop to die and be restarted", lambda: sup.health().sources["loop"].restarts == 1
        )
        await eventually("running again", lambda: sup.health().sources["loop"].healthy)
        assert sup.health().sources["loop"].last_error == "crashed: ConnectionResetError: consumer loop died"
        began = time.monotonic()
    assert time.monotonic() - began < 2.0  # stop() made the long-running start() return
    assert sup.health().sources["loop"].state == "stopped" and STARTS["loop"] == 2


async def test_driver_events_become_a_counter_and_unknown_lag_reads_nan(memory_brain, registry) -> None:
    sup = supervisor(
        memory_brain, registry, {"ev": {"type": "stream", "driver": "ingest_test_drivers:EventfulDriver"}}
    )

    def counted() -> float | None:
        return sample(registry, "astrocyte_ingest_driver_events_total", source="ev", event="group_recreated")

    async with sup:
        await eventually(
            "three events counted", lambda: counted() == 3, seen=lambda: (counted(), sup.health())
        )
        await asyncio.sleep(0.2)  # more polls report the same total: counted once
        assert counted() == 3
        lag = sample(registry, "astrocyte_ingest_lag", source="ev")
        assert lag is not None and math.isnan(lag)
        assert sup.health().sources["ev"].lag is None
