"""The Kafka ingest driver (entry point ``kafka`` in ``astrocyte.ingest_stream_drivers``).

One consumer in the source's group, auto-commit off. The fetch loop hands each partition's records
to that partition's :class:`PartitionWorker` (ordered within a partition, parallel across them) and
pauses a partition whose worker holds ``max_in_flight_per_partition`` records (a failing sink fills
it, so backoff becomes backpressure with bounded memory). On revocation the workers of the revoked
partitions finish their batch in hand and their offsets are committed before the partitions go.
A probe (end offsets of the assignment, or metadata when nothing is assigned) says whether the
brokers answer; the driver reconnects on its own, including when the brokers are down at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from astrocyte.errors import ConfigError
from astrocyte.ingest.driver import DriverHealth, DriverState, DriverStopping, until_stopped, validate_model
from astrocyte.ingest.sink import Sink

from astrocyte_ingestion_kafka.commits import Committer
from astrocyte_ingestion_kafka.config import KafkaSourceConfig
from astrocyte_ingestion_kafka.connection import client_options
from astrocyte_ingestion_kafka.deadletter import DeadLetters
from astrocyte_ingestion_kafka.decode import RecordDecoder
from astrocyte_ingestion_kafka.metrics import kafka_metrics
from astrocyte_ingestion_kafka.partition import PartitionHooks, PartitionWorker

log = logging.getLogger("astrocyte_ingestion_kafka")
T = TypeVar("T")
FATAL = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
)


_Stopped = DriverStopping  # the driver is stopping: leave the fetch loop


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, driver: KafkaStreamDriver) -> None:
        self.driver = driver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.driver._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.driver._assign(set(assigned))


class KafkaStreamDriver:
    """Consumes Kafka topics through a consumer group into an Astrocyte sink."""

    source_type: ClassVar[Literal["stream", "poll"]] = "stream"

    def __init__(self, source_id: str, config: KafkaSourceConfig, *, sink: Sink) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.decoder = RecordDecoder(config.mapping, config.idempotency_key, config.max_record_bytes)
        self.metrics = kafka_metrics()
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._dead_letters: DeadLetters | None = None
        self._committer: Committer | None = None
        self._failing: dict[TopicPartition, str] = {}
        self._lag: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._loop_done = asyncio.Event()
        self._state: DriverState = "starting"
        self._detail: str | None = None
        self._last_error: str | None = None

    @classmethod
    def contract_harness(cls) -> Any:
        """The core contract kit's harness on ``ASTROCYTE_TEST_KAFKA_BOOTSTRAP`` (None when unset)."""
        from astrocyte_ingestion_kafka.testing import KafkaHarness  # test support, loaded on demand

        return KafkaHarness.from_env()

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> KafkaSourceConfig:
        """Validate the driver keys of a source; raises :class:`ConfigError` naming the bad key."""
        return validate_model(KafkaSourceConfig, mapping)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Consume until :meth:`stop`; raises on a fatal error (missing credentials, failed
        authentication, no permission) so the supervisor rebuilds the driver."""
        try:
            await self._run()
        finally:
            self._loop_done.set()

    async def stop(self, deadline: float) -> None:
        """Stop fetching, let each partition finish its batch in hand and commit it within
        ``deadline`` seconds, then leave the group (the rest is redelivered to the next owner)."""
        ends = time.monotonic() + deadline
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loop_done.wait(), timeout=max(0.0, ends - time.monotonic()))
        await self._close_workers(set(self.workers), ends - time.monotonic() - 0.2)
        await self._disconnect(max(0.5, ends - time.monotonic()))
        self._state, self._detail = "stopped", None

    async def health(self) -> DriverHealth:
        """State, total lag (high watermark minus committed, over the assignment) and records held."""
        state, detail = self._state, self._detail
        if state == "running" and self._failing:
            state, detail = "degraded", "; ".join(f"{_name(tp)}: {why}" for tp, why in self._failing.items())
        lag = sum(self._lag.values()) if self._lag else None
        pending = sum(worker.held for worker in self.workers.values())
        return DriverHealth(state, lag=lag, pending=pending, detail=detail)

    def partition_health(self) -> list[dict[str, Any]]:
        """Per assigned partition: lag, records held, committed offset, paused, last error."""
        committed = self._committer.committed if self._committer else {}
        return [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "lag": self._lag.get(tp),
                "held": worker.held,
                "committed": committed.get(tp),
                "paused": worker.paused,
                "state": "degraded" if tp in self._failing else "running",
                "last_error": worker.last_error,
            }
            for tp, worker in sorted(self.workers.items(), key=lambda item: _name(item[0]))
        ]

    # -- connecting -----------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._connect()
                attempt = 0
                await self._consume()
            except _Stopped:
                return
            except ConfigError as exc:
                self._state, self._detail = "failed", exc.message
                raise
            except FATAL as exc:
                self._state, self._detail = "failed", f"kafka: {type(exc).__name__}: {exc}"
                raise
            except (KafkaError, OSError) as exc:
                self._last_error = f"kafka unreachable: {type(exc).__name__}: {exc}"
                self._state, self._detail = "degraded", self._last_error
                log.warning("kafka source %s: %s; reconnecting", self.source_id, self._last_error)
                await self._disconnect(2.0)
                attempt += 1
                with contextlib.suppress(_Stopped):
                    await self._until_stopped(asyncio.sleep(self._backoff(attempt)))
            except Exception as exc:  # a bug: say so in health, and let the supervisor rebuild us
                self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
                raise

    async def _connect(self) -> None:
        config = self.config
        options = client_options(config, self.source_id)
        self._dead_letters = DeadLetters(config, self.source_id, options, self.sink)
        consumer = AIOKafkaConsumer(
            **options,
            group_id=config.group,
            group_instance_id=config.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=config.start_offset,
            isolation_level="read_committed",
            max_poll_records=config.batch_size,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            rebalance_timeout_ms=max(config.session_timeout_ms, int(config.rebalance_drain_s * 1000) + 5_000),
        )
        listener = _Rebalance(self)
        if config.topic_pattern:
            consumer.subscribe(pattern=f"^(?:{config.topic_pattern})$", listener=listener)
        else:
            consumer.subscribe(topics=list(config.topics), listener=listener)
        self._consumer = consumer
        self._committer = Committer(consumer, self.source_id, self.metrics)
        await self._until_stopped(consumer.start())
        await self._until_stopped(self._dead_letters.start())
        await self._until_stopped(self._probe())
        self._state, self._detail = "running", None

    async def _disconnect(self, deadline: float) -> None:
        await self._close_workers(set(self.workers), 0.0)
        if self._committer is not None:
            await self._committer.close()
        clients: list[Awaitable[Any]] = []
        if self._consumer is not None:
            clients.append(self._consumer.stop())
        if self._dead_letters is not None:
            clients.append(self._dead_letters.stop())
        if clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), timeout=deadline)
        self._consumer = self._dead_letters = self._committer = None
        self._lag.clear()

    # -- consuming ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        records = self.metrics.records
        next_probe = time.monotonic() + self.config.probe_interval_s
        while True:
            batches = await self._until_stopped(
                consumer.getmany(
                    timeout_ms=self.config.poll_timeout_ms, max_records=self.config.batch_size * 4
                )
            )
            for tp, fetched in batches.items():
                worker = self.workers.get(tp)
                if worker is not None:  # records of a partition revoked meanwhile are dropped
                    worker.offer(fetched)
                    records.labels(source=self.source_id, topic=tp.topic).inc(len(fetched))
            if time.monotonic() >= next_probe:
                await self._until_stopped(self._probe())
                next_probe = time.monotonic() + self.config.probe_interval_s

    async def _probe(self) -> None:
        """Ask the brokers something cheap and update lag; degraded while they do not answer
        (aiokafka reconnects by itself; the probe only tells the truth about it)."""
        assert self._consumer is not None
        consumer = self._consumer
        assigned = list(self.workers)
        try:
            async with asyncio.timeout(self.config.probe_timeout_s):
                ends: dict[TopicPartition, int] = {}
                if not assigned:
                    await consumer.topics()
                else:
                    ends = await consumer.end_offsets(assigned)
        except (TimeoutError, KafkaError, OSError) as exc:
            why = "no answer within probe_timeout_s" if isinstance(exc, TimeoutError) else repr(exc)
            self._last_error = f"kafka unreachable: {why}"
            self._state, self._detail = "degraded", self._last_error
            return
        if self._state == "degraded" and self._detail == self._last_error:
            self._state, self._detail = "running", None
        committed = self._committer.committed if self._committer else {}
        for tp, end in ends.items():
            base = committed.get(tp)
            if base is None:
                worker = self.workers.get(tp)
                base = worker.next_offset - worker.held if worker and worker.next_offset is not None else None
            if base is not None:
                self._lag[tp] = max(0, end - base)
                self.metrics.lag.labels(self.source_id, tp.topic, str(tp.partition)).set(self._lag[tp])

    # -- rebalancing ----------------------------------------------------------------------------

    def _assign(self, assigned: set[TopicPartition]) -> None:
        assert self._dead_letters is not None
        hooks = PartitionHooks(self._mark, self._pause, self._partition_failing, self._settled)
        for tp in assigned - set(self.workers):
            self.workers[tp] = PartitionWorker(
                tp, self.config, self.sink, self.decoder, self._dead_letters, hooks
            )
        log.info("kafka source %s assigned %s", self.source_id, ", ".join(sorted(map(_name, assigned))))

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        """Finish and commit the batches in hand of ``revoked`` before the group moves them."""
        await self._close_workers(revoked & set(self.workers), self.config.rebalance_drain_s)

    async def _close_workers(self, tps: set[TopicPartition], deadline: float) -> None:
        workers = [self.workers[tp] for tp in tps if tp in self.workers]
        if not workers:
            return
        await asyncio.gather(*(worker.close(deadline) for worker in workers))
        if self._committer is not None:
            with contextlib.suppress(KafkaError, asyncio.CancelledError):
                await asyncio.wait_for(self._committer.flush(tps), timeout=max(1.0, deadline))
            self._committer.forget(tps)
        for tp in tps:
            self.workers.pop(tp, None)
            self._failing.pop(tp, None)
            self._lag.pop(tp, None)

    # -- partition hooks ------------------------------------------------------------------------

    def _mark(self, tp: TopicPartition, offset: int) -> None:
        if self._committer is not None and tp in self.workers:
            self._committer.mark(tp, offset)

    def _pause(self, tp: TopicPartition, pause: bool) -> None:
        consumer = self._consumer
        if consumer is None or tp not in consumer.assignment():
            return
        if pause:
            consumer.pause(tp)
        else:
            consumer.resume(tp)

    def _partition_failing(self, tp: TopicPartition, detail: str | None) -> None:
        if detail is None:
            self._failing.pop(tp, None)
        else:
            self._failing[tp] = detail
            self._last_error = detail

    def _settled(self, outcome: str, count: int) -> None:
        self.metrics.outcomes.labels(source=self.source_id, outcome=outcome).inc(count)

    # -- helpers --------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max_ms, self.config.backoff_initial_ms * 2 ** min(attempt, 30)) / 1000
        return base * random.uniform(0.8, 1.2)

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the driver stops first (then cancel it and raise _Stopped)."""
        return await until_stopped(awaitable, self._stopping)


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"
