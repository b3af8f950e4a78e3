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
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

from astrocyte.ingest.driver import DriverHealth, DriverState, DriverStopping, until_stopped, validate_model
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
from astrocyte_ingestion_redis.group import ConsumerGroup, Delivered, GroupCreated, GroupStats
from astrocyte_ingestion_redis.settle import Abandoned, BatchSettler, SettleHooks

log = logging.getLogger("astrocyte_ingestion_redis")
T = TypeVar("T")
FORGET_TIMEOUT_SECONDS = 1.0


_Stopped = DriverStopping  # the driver is stopping: leave the reader loop


class _CallWatch:
    """Redis commands in flight and when each is due to answer, so health can tell a stalled server
    (connected, answering nothing: ``CLIENT PAUSE``, overload, a half-open partition) from a quiet one.
    A command is overdue ``grace`` seconds (the configured block time) after the time it may
    legitimately take (a blocking read's own block time, else nothing)."""

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._started: dict[int, tuple[float, float]] = {}  # token -> (started, due)
        self._tokens = 0

    async def run(self, command: Callable[[], Awaitable[T]], allowed: float = 0.0) -> T:
        """Await ``command()``, allowed to take ``allowed`` seconds (a blocking read's block time).
        (A callable, not a coroutine: a run closed before it starts leaves no coroutine unawaited.)"""
        self._tokens += 1
        token = self._tokens
        now = time.monotonic()
        self._started[token] = (now, now + allowed + self._grace)
        try:
            return await command()
        finally:
            del self._started[token]

    def stalled_for(self) -> float | None:
        """Seconds the oldest overdue command has waited, or None when none is overdue."""
        now = time.monotonic()
        overdue = [started for started, due in self._started.values() if now > due]
        return now - min(overdue) if overdue else None


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
        self._watch = _CallWatch(grace=config.block_ms / 1000)
        self._settler = BatchSettler(
            self.group,
            sink,
            config,
            SettleHooks(
                self._backing_off,
                self._recovered,
                self._stopping,
                self._write_failing,
                self._write_recovered,
                self._watch.run,
            ),
        )
        self._plan = _ReadPlan(config.streams, config.claim_interval_s)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # Batch tasks to let finish before the next read of our own pending entries from the start.
        self._settle_before_recovery: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, str]] = set()
        self._failing_batches = 0
        self._sink_detail: str | None = None
        self._failing_writes = 0
        self._write_detail: str | None = None
        self._stalled = False
        self._connected_once = False
        self._dead_letters_present: set[str] = set()
        self._events: Counter[str] = Counter()
        self._note: str | None = None  # the last incident, shown as the detail while running
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
        """State, group-wide pending entries and lag (None when Redis cannot tell), and the events
        counted so far (``group_recreated``, ``stream_lost``, ``pending_deleted``, ``stalled``, ...).

        ``degraded`` while Redis is unreachable, while a command has gone unanswered longer than the
        configured block time (a paused or stalled server), while the sink fails, and while a Redis
        write of a batch (an acknowledgement, a dead letter) fails. While ``running`` the detail is
        the last incident (a recreated group, a lost stream), if any."""
        state, detail = self._state, self._detail
        if state == "running":
            stalled = self._watch.stalled_for()
            if stalled is not None and not self._stalled:
                self._events["stalled"] += 1
                log.warning("redis source %s: redis has not answered for %.1fs", self.source_id, stalled)
            self._stalled = stalled is not None
            if stalled is not None:
                state = "degraded"
                detail = f"redis has not answered for {stalled:.1f}s (paused, overloaded or partitioned)"
            elif self._failing_batches:
                state, detail = "degraded", self._sink_detail
            elif self._failing_writes:
                state, detail = "degraded", self._write_detail
            else:
                detail = self._note
        return DriverHealth(
            state, lag=self._stats.lag, pending=self._stats.pending, detail=detail, events=dict(self._events)
        )

    # -- the reader loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        # Reconnects are capped low (reconnect_max_ms, 1 s by default, with jitter): one cheap PING
        # a second does not hammer a server that is down, and the driver is back within about a
        # second of the server answering again, however long the outage was.
        reconnect_max = self.config.reconnect_max_ms / 1000
        backoff = Backoff(min(self.config.backoff_initial_ms / 1000, reconnect_max), reconnect_max)
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
                if _is_nogroup(exc):  # Redis is up; the group is gone: recreate it at once
                    self._group_missing(exc)
                    delay = backoff.initial
                else:
                    self._state, self._detail = "degraded", f"redis unreachable: {type(exc).__name__}: {exc}"
                    log.warning("redis source %s: %s; reconnecting", self.source_id, self._detail)
                    delay = backoff.next()
                with contextlib.suppress(_Stopped):
                    await self._until_stopped(asyncio.sleep(delay))
            except Exception as exc:  # a bug: say so in health, and let the supervisor rebuild us
                self._state, self._detail = "failed", f"{type(exc).__name__}: {exc}"
                raise

    async def _connect(self) -> None:
        await self._until_stopped(self._watch.run(self._client.ping))
        created = await self._until_stopped(self._watch.run(self.group.ensure))
        present = await self._until_stopped(self._watch.run(self.group.present_dead_letter_streams))
        if self._connected_once:
            self._report_losses(created, self._dead_letters_present - present)
        elif created:
            log.info(
                "redis source %s created consumer group %r on %s",
                self.source_id,
                self.group.group,
                ", ".join(c.stream for c in created),
            )
        self._connected_once = True
        self._dead_letters_present = present
        self._plan.restart()
        self._settle_before_recovery = set(self._tasks)
        self._state, self._detail = "running", None

    def _group_missing(self, exc: BaseException) -> None:
        self._state = "degraded"
        self._detail = f"consumer group {self.group.group!r} missing ({exc}); recreating it"
        log.warning(
            "redis source %s: consumer group %r is missing although Redis answers (destroyed, or "
            "lost with Redis's data); recreating it",
            self.source_id,
            self.group.group,
        )

    def _report_losses(self, created: Sequence[GroupCreated], dead_letters_gone: set[str]) -> None:
        """Say what a reconnect found missing: a group recreated on a stream that is still there
        (its entries are read again), or a stream gone with its group (a restart without
        persistence, or the key deleted), and dead-letter streams gone."""
        notes: list[str] = []
        for found in created:
            if found.stream_existed:
                self._events["group_recreated"] += 1
                self._events["entries_reread"] += found.length
                notes.append(
                    f"consumer group {self.group.group!r} was missing on stream {found.stream!r}; "
                    f"recreated at id {found.start_id}, {found.length} entries will be read again "
                    "(the store answers duplicate for those it holds; entries already dead-lettered "
                    "are not dead-lettered again)"
                )
            else:
                self._events["stream_lost"] += 1
                notes.append(
                    f"stream {found.stream!r} and its consumer group {self.group.group!r} were gone "
                    "(Redis restarted without persistence, or the key was deleted); recreated empty: "
                    "entries that were pending there cannot be redelivered"
                )
        if dead_letters_gone:
            self._events["dead_letters_lost"] += len(dead_letters_gone)
            notes.append(f"dead-letter stream(s) {', '.join(sorted(dead_letters_gone))} gone")
        if notes:
            text = "; ".join(notes)
            log.warning("redis source %s: %s", self.source_id, text)
            self._note = f"at {datetime.now(UTC).isoformat(timespec='seconds')}: {text}"

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
            batch = await self._until_stopped(
                self._watch.run(partial(self.group.read, plan.recovering, count, None))
            )
            last = {item.stream: item.entry_id for item in batch}
            plan.recovering = {stream: last[stream] for stream in plan.recovering if stream in last}
            if batch:
                await self._watch.run(partial(self.group.count_deliveries, batch))
            return self._not_in_flight(batch)
        if plan.claim_due():
            return await self._claim(count)
        new = dict.fromkeys(plan.streams, ">")
        block = self.config.block_ms
        return await self._until_stopped(
            self._watch.run(partial(self.group.read, new, count, block), block / 1000)
        )

    async def _claim(self, count: int) -> list[Delivered]:
        plan = self._plan
        claimed: list[Delivered] = []
        cursors: dict[str, str] = {}
        for stream in plan.streams:
            page = await self._watch.run(partial(self.group.claim, stream, plan.claim_cursors[stream], count))
            cursors[stream] = page.cursor
            claimed.extend(page.entries)
            if page.deleted:
                self._events["pending_deleted"] += len(page.deleted)
                log.warning(
                    "redis source %s: %d entries pending under an idle consumer were deleted from "
                    "stream %r before anyone stored them (trimmed or XDEL'd); Redis dropped them "
                    "from the pending list and they are lost: %s",
                    self.source_id,
                    len(page.deleted),
                    stream,
                    ", ".join(page.deleted[:10]),
                )
        if plan.claimed(cursors):
            await self._forget_idle_consumers()
        if claimed:
            await self._watch.run(partial(self.group.count_deliveries, claimed))
            log.info("redis source %s claimed %d idle entries", self.source_id, len(claimed))
        return self._not_in_flight(claimed)

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
        except Abandoned as exc:
            # What is left stays pending (or comes back through a recreated group): re-read our own
            # pending list, after the other batches settled.
            log.info("redis source %s: rest of a batch left pending: %s", self.source_id, exc)
            if self._stopping.is_set():
                return
            self._plan.recovering = dict.fromkeys(self._plan.streams, "0")
            current = asyncio.current_task()
            self._settle_before_recovery = {task for task in self._tasks if task is not current}

    # -- helpers --------------------------------------------------------------------------------

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the driver stops first (then cancel it and raise _Stopped)."""
        return await until_stopped(awaitable, self._stopping)

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

    def _write_failing(self, detail: str) -> None:
        self._failing_writes += 1
        self._events["write_failed"] += 1
        self._write_detail = f"{detail}; retrying (the valid entries of the batch are stored)"

    def _write_recovered(self) -> None:
        self._failing_writes = max(0, self._failing_writes - 1)
        if not self._failing_writes:
            self._write_detail = None

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


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


async def _wait_event(event: asyncio.Event, ends: float) -> bool:
    """Wait for ``event`` until the monotonic time ``ends``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(0.0, ends - time.monotonic()))
    return event.is_set()
