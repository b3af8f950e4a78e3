"""Offset commits: partitions mark what they may commit, one committer sends it.

Commits for all partitions are coalesced into one request while the previous one is in flight, so
settling never waits on a commit round trip, yet nothing is committed before its partition marked
it (which happens only once the sink or the dead-letter topic answered for every record before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError  # type: ignore[import-untyped]

from astrocyte_ingestion_kafka.metrics import KafkaMetrics

log = logging.getLogger("astrocyte_ingestion_kafka")


class Committer:
    """Coalesces and sends the offsets partitions mark as committable."""

    def __init__(self, consumer: AIOKafkaConsumer, source_id: str, metrics: KafkaMetrics) -> None:
        self.consumer = consumer
        self.committed: dict[TopicPartition, int] = {}
        self.last_error: str | None = None
        self._pending: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._seconds = metrics.commit_seconds.labels(source=source_id)
        self._task = asyncio.create_task(self._loop(), name=f"kafka-commits-{source_id}")

    def mark(self, tp: TopicPartition, offset: int) -> None:
        if offset > max(self._pending.get(tp, -1), self.committed.get(tp, -1)):
            self._pending[tp] = offset
            self._wake.set()

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop what is known of partitions this consumer no longer owns."""
        for tp in tps:
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    async def flush(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Commit what is marked (for ``tps``, or all) now; errors are logged and kept in
        ``last_error`` (the offsets stay marked for the next try unless the partition was lost)."""
        async with self._lock:
            wanted = set(self._pending) if tps is None else set(tps) & set(self._pending)
            offsets = {tp: self._pending.pop(tp) for tp in wanted}
            if not offsets:
                return
            started = time.perf_counter()
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on: these partitions belong to someone else now, who re-reads
                # from the last commit (the sink deduplicates what we stored meanwhile).
                log.info("kafka commit dropped after a rebalance: %s", type(exc).__name__)
                return
            except KafkaError as exc:
                self.last_error = f"commit failed: {type(exc).__name__}: {exc}"
                for tp, offset in offsets.items():
                    self.mark(tp, offset)
                raise
            self._seconds.observe(time.perf_counter() - started)
            self.committed.update(offsets)
            self.last_error = None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except KafkaError:
                await asyncio.sleep(0.5)
                self._wake.set()
