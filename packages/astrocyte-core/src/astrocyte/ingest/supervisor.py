"""The supervisor: runs one driver per configured source and keeps it running.

It builds each driver with its source's sink, starts it, watches it (the start task raising, or
``health()`` reporting ``failed``, is a crash), rebuilds a crashed driver after an exponential
backoff with jitter, and stops everything with a drain deadline. :meth:`IngestSupervisor.health`
is the snapshot behind ``/health/ingest``: ``ready`` is false while a ``required`` source is not
``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from astrocyte.ingest.config import SourceConfig, validate_sources
from astrocyte.ingest.driver import DriverHealth, DriverState
from astrocyte.ingest.metrics import IngestMetrics, ingest_metrics
from astrocyte.ingest.sink import IngestSink, Outcome, RetainManyTarget

log = logging.getLogger("astrocyte.ingest.supervisor")

STOP_GRACE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts: ``initial_delay * multiplier**(n-1)`` capped at ``max_delay``,
    spread by +/- ``jitter`` (a fraction) so replicas do not restart in lockstep. A driver that
    stays up ``reset_after`` seconds clears its crash streak."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = 60.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))


@dataclass(slots=True)
class SourceHealth:
    """Per-source health, as ``/health/ingest`` shows it."""

    source_id: str
    type: str
    driver: str
    required: bool
    state: DriverState = "starting"
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    restarts: int = 0
    counters: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "duplicate": 0, "rejected": 0, "failed": 0}
    )
    lag: int | None = None
    pending: int | None = None
    detail: str | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "running"

    def to_dict(self, *, include_errors: bool = True) -> dict[str, Any]:
        body = asdict(self)
        body["healthy"] = self.healthy
        for key in ("last_success_at", "last_error_at"):
            body[key] = body[key].isoformat() if body[key] else None
        if not include_errors:
            body["last_error"] = None
            body["detail"] = None
        return body


@dataclass(slots=True)
class IngestHealth:
    """All sources; ``ready`` is False when any required source is unhealthy."""

    ready: bool
    sources: dict[str, SourceHealth]

    def to_dict(self, *, include_errors: bool = True) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "sources": {k: v.to_dict(include_errors=include_errors) for k, v in self.sources.items()},
        }


class _SourceRunner:
    """Runs, watches and restarts the driver of one source."""

    def __init__(self, brain: RetainManyTarget, source: SourceConfig, supervisor: IngestSupervisor) -> None:
        self.source = source
        self._sup = supervisor
        self.health = SourceHealth(source.source_id, source.source_type, source.driver, source.required)
        self.sink = IngestSink.for_source(brain, source, observer=self._observe)
        self.driver: Any = None
        self._start_task: asyncio.Task[None] | None = None
        self._streak = 0
        self._sink_failing = False
        self._stop_deadline = 0.0
        self._stopping = asyncio.Event()
        self._events_seen: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    @property
    def _metrics(self) -> IngestMetrics:
        return self._sup.metrics

    def _observe(self, outcomes: Sequence[Outcome], seconds: float | None) -> None:
        sid = self.source.source_id
        for outcome in outcomes:
            self.health.counters[outcome.status] += 1
        self._metrics.record_outcomes(sid, (o.status for o in outcomes))
        if seconds is None:  # an entry the driver dead-lettered itself: counted, not a sink batch
            return
        self._metrics.batch_seconds.labels(source=sid).observe(seconds)
        if any(o.status in ("stored", "duplicate") for o in outcomes):
            self.health.last_success_at = datetime.now(UTC)
        if outcomes and all(o.status == "failed" for o in outcomes):
            self._sink_failing = True
            self.health.consecutive_failures += 1
            self._record_error(f"sink: {outcomes[0].code}: {outcomes[0].reason}")
        elif outcomes:
            self._sink_failing = False
            if self._streak == 0:
                self.health.consecutive_failures = 0

    def _record_error(self, text: str) -> None:
        self.health.last_error = text
        self.health.last_error_at = datetime.now(UTC)

    def _set_state(self, state: DriverState, detail: str | None = None) -> None:
        self.health.state = state
        self.health.detail = detail
        self._metrics.up.labels(source=self.source.source_id).set(1 if state == "running" else 0)

    async def run(self) -> None:
        while not self._stopping.is_set():
            if not await self._run_once():
                break
            delay = self._sup.restart.delay(self._streak)
            log.warning("ingest source %s restarts in %.2fs", self.source.source_id, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        self._set_state("stopped")

    async def _run_once(self) -> bool:
        """Build, start and watch one driver instance; True when it crashed (restart wanted)."""
        self._set_state("starting")
        self._events_seen = {}  # a new driver instance counts its events from zero
        try:
            self.driver = self.source.driver_class(
                self.source.source_id, self.source.driver_config, sink=self.sink
            )
        except Exception as exc:  # a constructor failure is a crash like any other
            return await self._crashed(f"build: {type(exc).__name__}: {exc}")
        self._start_task = asyncio.create_task(
            self.driver.start(), name=f"ingest-start-{self.source.source_id}"
        )
        stop_waiter = asyncio.create_task(self._stopping.wait())
        try:
            crash = await self._watch(stop_waiter)
        finally:
            stop_waiter.cancel()
        if crash is not None:
            return await self._crashed(crash)
        await self._stop_driver(self._stop_deadline)
        return False

    async def _watch(self, stop_waiter: asyncio.Task[Any]) -> str | None:
        """Poll the running driver until a stop is requested (None) or it crashes (the reason)."""
        started = time.monotonic()
        while not self._stopping.is_set():
            waiting = {stop_waiter} | (
                {self._start_task} if self._start_task and not self._start_task.done() else set()
            )
            await asyncio.wait(waiting, timeout=self._sup.poll_interval, return_when=asyncio.FIRST_COMPLETED)
            if self._stopping.is_set():
                return None
            crash = self._start_crash() or await self._poll_health()
            if crash is not None:
                return crash
            if self._streak and time.monotonic() - started >= self._sup.restart.reset_after:
                self._streak = 0
                self.health.consecutive_failures = 0
        return None

    def _start_crash(self) -> str | None:
        task = self._start_task
        if task is None or not task.done() or task.cancelled() or task.exception() is None:
            return None
        exc = task.exception()
        return f"crashed: {type(exc).__name__}: {exc}"

    async def _poll_health(self) -> str | None:
        try:
            reported: DriverHealth = await asyncio.wait_for(self.driver.health(), timeout=5.0)
        except Exception as exc:  # a driver whose health call fails is not healthy, but not dead either
            self._set_state("degraded", f"health check failed: {type(exc).__name__}")
            return None
        if reported.state == "failed":
            return f"fatal: {reported.detail or 'driver reported failed'}"
        sid = self.source.source_id
        self.health.lag, self.health.pending = reported.lag, reported.pending
        # Unknown lag (a trimmed stream, say) is NaN, not the last known figure frozen forever.
        self._metrics.lag.labels(source=sid).set(math.nan if reported.lag is None else reported.lag)
        self._count_events(getattr(reported, "events", None) or {})
        if reported.pending is not None:
            self._metrics.pending.labels(source=sid).set(reported.pending)
        if reported.state == "running" and self._sink_failing:
            self._set_state("degraded", "sink failing; the driver is backing off")
        else:
            self._set_state(reported.state, reported.detail)
        return None

    def _count_events(self, events: Mapping[str, int]) -> None:
        """Export the increments of the driver's running event totals."""
        for event, total in events.items():
            seen = self._events_seen.get(event, 0)
            if total > seen:
                self._metrics.events.labels(source=self.source.source_id, event=event).inc(total - seen)
            self._events_seen[event] = total

    async def _crashed(self, reason: str) -> bool:
        log.error("ingest source %s: %s", self.source.source_id, reason)
        self._streak += 1
        self.health.consecutive_failures += 1
        self.health.restarts += 1
        self._record_error(reason)
        self._set_state("failed", reason)
        self._metrics.restarts.labels(source=self.source.source_id).inc()
        await self._stop_driver(min(1.0, self._sup.restart.initial_delay))
        return not self._stopping.is_set()

    async def _stop_driver(self, deadline: float) -> None:
        driver, task = self.driver, self._start_task
        self.driver, self._start_task = None, None
        if driver is not None:
            try:
                await asyncio.wait_for(driver.stop(deadline), timeout=deadline + STOP_GRACE_SECONDS)
            except Exception as exc:  # stopping a broken driver must not stop the others
                log.warning("ingest source %s: stop failed: %s", self.source.source_id, type(exc).__name__)
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=STOP_GRACE_SECONDS)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def request_stop(self, deadline: float) -> None:
        self._stop_deadline = deadline
        self._stopping.set()


class IngestSupervisor:
    """Runs the drivers of every configured source against one engine."""

    def __init__(
        self,
        brain: RetainManyTarget,
        sources: Mapping[str, SourceConfig],
        *,
        restart: RestartPolicy | None = None,
        poll_interval: float = 1.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.restart = restart or RestartPolicy()
        self.poll_interval = poll_interval
        self.metrics = ingest_metrics(registry)
        self._runners = {sid: _SourceRunner(brain, source, self) for sid, source in sources.items()}

    @classmethod
    def from_mapping(
        cls, brain: RetainManyTarget, sources: Mapping[str, Any] | None, **kwargs: Any
    ) -> IngestSupervisor:
        """Validate a raw ``sources`` section and build the supervisor for it."""
        return cls(brain, validate_sources(sources), **kwargs)

    @property
    def source_ids(self) -> list[str]:
        return list(self._runners)

    def driver(self, source_id: str) -> Any:
        """The live driver instance of a source (None between a crash and its restart)."""
        return self._runners[source_id].driver

    def sink(self, source_id: str) -> IngestSink:
        """The sink of a source (the gateway's webhook route submits through it)."""
        return self._runners[source_id].sink

    async def start(self) -> None:
        """Start every source in the background; returns at once (watch :meth:`health`)."""
        for sid, runner in self._runners.items():
            if runner.task is None:
                runner.task = asyncio.create_task(runner.run(), name=f"ingest-source-{sid}")

    async def stop(self, deadline: float = 30.0) -> None:
        """Stop every driver, letting in-flight batches drain for up to ``deadline`` seconds."""
        tasks = []
        for runner in self._runners.values():
            runner.request_stop(deadline)
            if runner.task is not None:
                tasks.append(runner.task)
            else:
                runner.health.state = "stopped"
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=deadline + 3 * STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        for task in [*done, *pending]:
            with contextlib.suppress(BaseException):
                await task

    def health(self) -> IngestHealth:
        """A snapshot of every source (driver health is polled every ``poll_interval`` seconds)."""
        sources = {sid: _copy(runner.health) for sid, runner in self._runners.items()}
        ready = all(h.healthy for h in sources.values() if h.required)
        return IngestHealth(ready=ready, sources=sources)

    async def __aenter__(self) -> IngestSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _copy(health: SourceHealth) -> SourceHealth:
    clone = SourceHealth(**{k: getattr(health, k) for k in health.__dataclass_fields__})
    clone.counters = dict(health.counters)
    return clone
