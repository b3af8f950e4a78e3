"""Test-only drivers that misbehave on purpose, for the supervisor tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from astrocyte.ingest.driver import DriverConfig, DriverHealth, DriverState, validate_model
from astrocyte.ingest.sink import Sink
from astrocyte.ingest.supervisor import RestartPolicy

STARTS: Counter[str] = Counter()
FAST_RESTART = RestartPolicy(initial_delay=0.05, max_delay=0.2, multiplier=2.0, jitter=0.1, reset_after=60.0)


class FlakyDriverConfig(DriverConfig):
    crashes: int = 0  # start() raises this many times (per source id) before it works
    fatal_reports: int = 0  # health() says failed this many times (per source id) before it works
    stop_hangs: bool = False  # stop() ignores its deadline
    run_in_start: bool = False  # start() runs the consume loop until stopped
    die_after: float | None = None  # with run_in_start: the loop raises after this many seconds (once)


class FlakyDriver:
    """Crashes in start() or reports a fatal health a configured number of times, then runs."""

    source_type: ClassVar[Literal["stream", "poll"]] = "stream"
    fatal_seen: ClassVar[Counter[str]] = Counter()

    def __init__(self, source_id: str, config: FlakyDriverConfig, *, sink: Sink) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.state: DriverState = "starting"
        self._stopped = asyncio.Event()

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> FlakyDriverConfig:
        return validate_model(FlakyDriverConfig, mapping)

    async def start(self) -> None:
        STARTS[self.source_id] += 1
        if STARTS[self.source_id] <= self.config.crashes:
            raise RuntimeError("boom")
        self.state = "running"
        if self.config.run_in_start:
            await self._consume()

    async def _consume(self) -> None:
        if self.config.die_after is not None and STARTS[self.source_id] == 1:
            await asyncio.sleep(self.config.die_after)
            raise ConnectionResetError("consumer loop died")
        await self._stopped.wait()

    async def stop(self, deadline: float) -> None:
        if self.config.stop_hangs:
            await asyncio.sleep(3600)
        self.state = "stopped"
        self._stopped.set()

    async def health(self) -> DriverHealth:
        if self.state == "running" and self.fatal_seen[self.source_id] < self.config.fatal_reports:
            self.fatal_seen[self.source_id] += 1
            return DriverHealth("failed", detail="lost the consumer group")
        return DriverHealth(self.state, lag=7 if self.state == "running" else None)


class EventfulDriver(FlakyDriver):
    """Reports a growing event total and an unknown lag (a trimmed stream, say)."""

    async def health(self) -> DriverHealth:
        self.reports = getattr(self, "reports", 0) + 1
        return DriverHealth(self.state, lag=None, events={"group_recreated": min(self.reports, 3)})


class PollOnlyDriver(FlakyDriver):
    source_type: ClassVar[Literal["stream", "poll"]] = "poll"


class NoSchemaDriver:
    source_type: ClassVar[Literal["stream", "poll"]] = "stream"
