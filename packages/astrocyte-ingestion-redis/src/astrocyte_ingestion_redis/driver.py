"""The Redis Streams ingest driver (entry point ``redis`` in ``astrocyte.ingest_stream_drivers``).

One reader loop per driver: after each (re)connect it first re-reads this consumer's own pending
entries (``XREADGROUP ... 0``), then sweeps entries other consumers left idle (``XAUTOCLAIM``) every
``claim_interval``, and otherwise reads new entries (``XREADGROUP ... >``). Each batch is settled by
its own task, at most ``concurrency`` at a time; see :mod:`astrocyte_ingestion_redis.settle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

from astrocyte.ingest.driver import DriverHealth, DriverState, validate_model
from astrocyte.ingest.sink import Outcome, Sink
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from astrocyte_ingestion_redis.backoff import Backoff
from astrocyte_ingestion_redis.config import RedisStreamConfig
from astrocyte_ingestion_redis.connection import build_client, default_consumer_name
from astrocyte_ingestion_redis.group import ConsumerGroup, Delivered, GroupStats
from astrocyte_ingestion_redis.settle import BatchSettler, SettleHooks

log = logging.getLogger("astrocyte_ingestion_redis")
T = TypeVar("T")
FORGET_TIMEOUT_SECONDS = 1.0


class _Stopped(Exception):
    """The driver is stopping: leave the reader loop."""


class _ReadPlan:
    """What the reader reads next: own pending entries first, then idle claims, then new entries."""

    def __init__(self, streams: Sequence[str], claim_interval: float) -> None:
        self.streams = tuple(streams)
        self.claim_interval = claim_interval
        self.recovering: dict[str, str] = {}
        self.claim_cursors: dict[str, str] = {}
        self.next_claim = 0.0
        self.restart()

    def restart(self) -> None:
        """After a (re)connect: re-read own pending entries from the start, then sweep claims."""
        self.recovering = dict.fromkeys(self.streams, "0")
        self.claim_cursors = dict.fromkeys(self.streams, "0-0")
        self.next_claim = 0.0

    def claim_due(self) -> bool:
        return time.monotonic() >= self.next_claim

    def claimed(self, cursors: Mapping[str, str]) -> bool:
        """Record where each stream's sweep got to; True when the sweep is finished (the next one
        waits for the interval)."""
        self.claim_cursors.update(cursors)
        if all(cursor == "0-0" for cursor in self.claim_cursors.values()):
            self.next_claim = time.monotonic() + self.claim_interval
            return True
        return False


class RedisStreamDriver:
    """Consumes Redis Streams through a consumer group into an Astrocyte sink."""

    source_type: ClassVar[Literal["stream", "poll"]] = "stream"

    def __init__(self, source_id: str, config: RedisStreamConfig, *, sink: Sink) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.consumer = config.consumer or default_consumer_name()
        self._client = build_client(config, client_name=f"astrocyte-{source_id}")
        self.group = ConsumerGroup(self._client, config, self.consumer, source_id)
        self._stopping = asyncio.Event()
        self._reading_allowed = asyncio.Event()
        self._reading_allowed.set()
        self._settler = BatchSettler(
            self.group, sink, config, SettleHooks(self._backing_off, self._recovered, self._stopping)
        )
        self._plan = _ReadPlan(config.streams, config.claim_interval_s)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # Batch tasks to let finish before the next read of our own pending entries from the start.
        self._settle_before_recovery: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()
        self._failing_batches = 0
        self._sink_detail: str | None = None
        self._state: DriverState = "starting"
        self._detail: str | None = None
        self._stats = GroupStats(pending=0, lag=None)
        self._runner: asyncio.Task[Any] | None = None
        self._loop_done = asyncio.Event()
        self._stats_task: asyncio.Task[None] | None = None

    @classmethod
    def contract_harness(cls) -> Any:
        """The core contract kit's harness: a private redis-server from
        ``ASTROCYTE_TEST_REDIS_SERVER_BIN``, or None when that is not set."""
        from astrocyte_ingestion_redis.testing import RedisHarness  # test support, loaded on demand

        return RedisHarness.from_env()

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> RedisStreamConfig:
        """Validate the driver keys of a source; raises :class:`ConfigError` naming the bad key."""
        return validate_model(RedisStreamConfig, mapping)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the reader loop until :meth:`stop`; raises on a fatal error (bad credentials,
        missing permission, a key that is not a stream) so the supervisor rebuilds the driver."""
        self._runner = asyncio.current_task()
        self._stats_task = asyncio.create_task(self._stats_loop(), name=f"redis-stats-{self.source_id}")
        try:
            await self._run()
        finally:
            self._loop_done.set()

    async def stop(self, deadline: float) -> None:
        """Stop reading, let in-flight batches settle within ``deadline`` seconds, then cancel
        what is left (its entries stay pending and are redelivered), and close the connection."""
        ends = time.monotonic() + deadline
        self._stopping.set()
        if self._runner is not None and not await _wait_event(self._loop_done, ends):
            self._runner.cancel()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, ends - time.monotonic()))
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(BaseException):
                    await task
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(BaseException):
                await self._stats_task
        await self._forget_self()
        with contextlib.suppress(Exception):
            await self._client.aclose()
        self._state, self._detail = "stopped", None

    async def health(self) -> DriverHealth:
        """State, group-wide pending entries and lag (``XINFO GROUPS``; None when Redis cannot tell)."""
        state, detail = self._state, self._detail
        if state == "running" and self._failing_batches:
            state, detail = "degraded", self._sink_detail
        return DriverHealth(state, lag=self._stats.lag, pending=self._stats.pending, detail=detail)

    # -- the reader loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.config.backoff_initial_ms / 1000, self.config.backoff_max_ms / 1000)
        while not self._stopping.is_set():
            try:
                await self._connect()
                backoff.reset()
                await self._read_forever()
            except _Stopped:
                return
            except (RedisError, OSError) as exc:
                if self._is_fatal(exc):
                    self._state, self._detail = "failed", f"redis: {type(exc).__name__}: {exc}"
                    raise
                self._state, self._detail = "degraded", f"redis unreachable: {type(exc).__name__}: {exc}"
                log.warning("redis source %s: %s; reconnecting", self.source_id, self._detail)
                with contextlib.suppress(_Stopped):
                    await self._until_stopped(asyncio.sleep(backoff.next()))
            except Exception as exc:  # a bug: say so in health, and let the supervisor rebuild us
                self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
                raise

    async def _connect(self) -> None:
        await self._until_stopped(self._client.ping())
        await self._until_stopped(self.group.ensure())
        self._plan.restart()
        self._settle_before_recovery = set(self._tasks)
        self._state, self._detail = "running", None

    async def _read_forever(self) -> None:
        while True:
            await self._until_stopped(self._reading_allowed.wait())
            await self._until_stopped(self._slots.acquire())
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            if batch:
                self._spawn(batch)
            else:
                self._slots.release()

    async def _next_batch(self) -> list[Delivered]:
        plan, count = self._plan, self.config.batch_size
        if plan.recovering:
            # Reading our pending entries counts a delivery of each in Redis, also of those a batch
            # task still holds: let those settle first, or every reconnect during a slow batch
            # would push its entries towards max_deliveries (and a healthy entry into the DLQ).
            # Batches of this recovery need no wait: later pages start past their ids.
            settling, self._settle_before_recovery = self._settle_before_recovery, set()
            if settling:
                await self._until_stopped(asyncio.wait(settling))
            batch = await self._until_stopped(self.group.read(plan.recovering, count, None))
            last = {item.stream: item.entry_id for item in batch}
            plan.recovering = {stream: last[stream] for stream in plan.recovering if stream in last}
            if batch:
                await self.group.count_deliveries(batch)
            return self._not_in_flight(batch)
        if plan.claim_due():
            claimed: list[Delivered] = []
            cursors: dict[str, str] = {}
            for stream in plan.streams:
                cursors[stream], items = await self.group.claim(stream, plan.claim_cursors[stream], count)
                claimed.extend(items)
            if plan.claimed(cursors):
                await self._forget_idle_consumers()
            if claimed:
                await self.group.count_deliveries(claimed)
                log.info("redis source %s claimed %d idle entries", self.source_id, len(claimed))
            return self._not_in_flight(claimed)
        new = dict.fromkeys(plan.streams, ">")
        return await self._until_stopped(self.group.read(new, count, self.config.block_ms))

    def _not_in_flight(self, batch: list[Delivered]) -> list[Delivered]:
        """Pending reads and claims return entries a batch task of ours is still settling: skip them."""
        return [item for item in batch if (item.stream, item.entry_id) not in self._in_flight]

    def _spawn(self, batch: list[Delivered]) -> None:
        keys = {(item.stream, item.entry_id) for item in batch}
        self._in_flight |= keys
        task = asyncio.create_task(self._settle(batch), name=f"redis-batch-{self.source_id}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._in_flight -= keys
            self._slots.release()

        task.add_done_callback(done)

    async def _settle(self, batch: list[Delivered]) -> None:
        try:
            await self._settler.settle(batch)
        except (RedisError, OSError) as exc:
            # The entries stay pending; re-read our own pending list once Redis answers again.
            log.warning(
                "redis source %s: batch left pending: %s: %s", self.source_id, type(exc).__name__, exc
            )
            self._plan.recovering = dict.fromkeys(self._plan.streams, "0")
            current = asyncio.current_task()
            self._settle_before_recovery = {task for task in self._tasks if task is not current}

    # -- helpers --------------------------------------------------------------------------------

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the driver stops first (then cancel it and raise _Stopped)."""
        if self._stopping.is_set():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _Stopped
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
        if work.cancelled():
            raise _Stopped
        return work.result()

    def _is_fatal(self, exc: BaseException) -> bool:
        if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
            return True
        if isinstance(exc, ResponseError):
            text = str(exc)
            return text.startswith(("WRONGTYPE", "NOPERM")) or (
                "NOGROUP" in text and not self.config.create_group
            )
        return False

    def _backing_off(self, outcome: Outcome, delay: float, first: bool) -> None:
        if first:
            self._failing_batches += 1
        self._reading_allowed.clear()
        self._sink_detail = f"sink failing ({outcome.code}): retrying in {delay:.2f}s, reading paused"

    def _recovered(self) -> None:
        self._failing_batches -= 1
        if self._failing_batches <= 0:
            self._failing_batches = 0
            self._sink_detail = None
            self._reading_allowed.set()

    async def _stats_loop(self) -> None:
        while True:
            try:
                self._stats = await self.group.stats()
            except (RedisError, OSError) as exc:
                log.debug("redis source %s: stats unavailable: %s", self.source_id, type(exc).__name__)
            await asyncio.sleep(self.config.stats_interval_s)

    async def _forget_idle_consumers(self) -> None:
        """Tidy the names of dead replicas out of the group (best effort: a missing ACL grant for
        XINFO CONSUMERS only costs the tidying)."""
        idle_ms = self.config.forget_idle_consumers_ms
        if idle_ms is None:
            return
        try:
            removed = await self.group.forget_idle_consumers(idle_ms)
        except ResponseError as exc:
            log.warning("redis source %s: cannot tidy idle consumers: %s", self.source_id, exc)
            return
        if removed:
            log.info("redis source %s removed idle consumers %s", self.source_id, ", ".join(removed))

    async def _forget_self(self) -> None:
        """Drop this consumer's name from the group if it holds nothing (best effort)."""
        if self._state != "running":
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.group.forget_self_if_idle(), timeout=FORGET_TIMEOUT_SECONDS)


async def _wait_event(event: asyncio.Event, ends: float) -> bool:
    """Wait for ``event`` until the monotonic time ``ends``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(0.0, ends - time.monotonic()))
    return event.is_set()
