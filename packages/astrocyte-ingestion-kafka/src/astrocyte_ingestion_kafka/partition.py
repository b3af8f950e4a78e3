"""One assigned partition: its buffer, its settling task, and the offset it may commit.

Records of a partition are settled one batch at a time, in offset order; partitions run in
parallel. Within a batch, valid records go to the sink and poison records to the dead-letter topic
side by side, so a failing dead-letter write never holds back (or loses) a valid record, and a
failing sink never holds back a dead letter. What is left unsettled (sink ``failed``, a dead letter
not written) is retried alone with backoff; the committable offset is the first unsettled record's,
so a commit never passes a record that did not take effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition  # type: ignore[import-untyped]
from astrocyte.ingest.sink import IngestMessage, Outcome, Sink

from astrocyte_ingestion_kafka.config import KafkaSourceConfig
from astrocyte_ingestion_kafka.deadletter import DeadLetter, DeadLetters
from astrocyte_ingestion_kafka.decode import PoisonRecord, Record, RecordDecoder

log = logging.getLogger("astrocyte_ingestion_kafka")


@dataclass(slots=True)
class PartitionHooks:
    """What a partition tells the driver."""

    commit: Callable[[TopicPartition, int], None]  # this offset may be committed
    pause: Callable[[TopicPartition, bool], None]  # stop/resume fetching this partition
    failing: Callable[[TopicPartition, str | None], None]  # sink/DLQ failing (detail) or recovered
    settled: Callable[[str, int], None]  # outcome name, count (metrics)


@dataclass(slots=True)
class _Batch:
    records: list[Record]
    settled: list[bool]
    attempts: list[int] = field(default_factory=list)


class PartitionWorker:
    """Settles the records of one partition in order."""

    def __init__(
        self,
        tp: TopicPartition,
        config: KafkaSourceConfig,
        sink: Sink,
        decoder: RecordDecoder,
        dead_letters: DeadLetters,
        hooks: PartitionHooks,
    ) -> None:
        self.tp = tp
        self.config = config
        self.sink = sink
        self.decoder = decoder
        self.dead_letters = dead_letters
        self.hooks = hooks
        self.buffer: deque[Record] = deque()
        self.next_offset: int | None = None  # the offset after the last record accepted
        self.in_flight = 0
        self.paused = False
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._closing = False  # take no new batch (revoked or stopping)
        self._closed = asyncio.Event()  # wakes a backoff sleep early
        self.task = asyncio.create_task(self._run(), name=f"kafka-{tp.topic}-{tp.partition}")

    @property
    def held(self) -> int:
        """Records read but not yet committable (buffered or in the batch being settled)."""
        return len(self.buffer) + self.in_flight

    def offer(self, records: Sequence[Record]) -> None:
        """Accept fetched records (a refetch of what is already held is dropped)."""
        for record in records:
            if self.next_offset is None or record.offset >= self.next_offset:
                self.buffer.append(record)
                self.next_offset = record.offset + 1
        if self.held >= self.config.max_in_flight_per_partition and not self.paused:
            self.paused = True
            self.hooks.pause(self.tp, True)
        self._wake.set()

    async def close(self, deadline: float) -> None:
        """Finish the batch in hand (within ``deadline`` seconds), drop the rest of the buffer."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        done, _ = await asyncio.wait({self.task}, timeout=max(0.0, deadline))
        if not done:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        self.buffer.clear()

    async def _run(self) -> None:
        while not self._closing:
            if not self.buffer:
                self._wake.clear()
                await self._wake.wait()
                continue
            size = min(len(self.buffer), self.config.batch_size)
            records = [self.buffer.popleft() for _ in range(size)]
            self.in_flight = size
            try:
                await self._settle(_Batch(records, [False] * size, [0] * size))
            finally:
                self.in_flight = 0
            if self.paused and self.held <= self.config.max_in_flight_per_partition // 2:
                self.paused = False
                self.hooks.pause(self.tp, False)

    async def _settle(self, batch: _Batch) -> None:
        messages: dict[int, IngestMessage] = {}
        letters: dict[int, DeadLetter] = {}
        for index, record in enumerate(batch.records):
            try:
                messages[index] = self.decoder.decode(record)
            except PoisonRecord as poison:
                letters[index] = DeadLetter(record, poison.code, poison.reason, 1, poison=True)
        delay = self.config.backoff_initial_ms / 1000
        while True:
            failure = await self._attempt(batch, messages, letters)
            self._commit_prefix(batch)
            if failure is None:
                if self.last_error is not None:
                    self.last_error = None
                    self.hooks.failing(self.tp, None)
                return
            if self._closing:
                return  # left uncommitted: whoever reads the partition next retries it
            self.last_error = failure
            self.hooks.failing(self.tp, f"{failure}: retrying in {delay:.2f}s, partition paused")
            self.hooks.settled("retried", len(messages) + len(letters))
            await self._sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.config.backoff_max_ms / 1000, delay * 2)

    async def _attempt(
        self, batch: _Batch, messages: dict[int, IngestMessage], letters: dict[int, DeadLetter]
    ) -> str | None:
        """Submit the unsettled messages and write the unsettled dead letters side by side; update
        ``messages``/``letters`` to what is left; returns why something is left, or None."""
        submit = asyncio.ensure_future(self._submit(list(messages.values())))
        written = await self._write(letters)
        outcomes = await submit
        failure: str | None = None
        retry_after = 0.0
        settled: dict[str, int] = {}
        rejected: list[int] = []
        for index, outcome in zip(list(messages), outcomes, strict=True):
            batch.attempts[index] += 1
            if outcome.status == "failed":
                failure = f"sink failing ({outcome.code})"
                retry_after = max(retry_after, outcome.retry_after or 0.0)
                continue
            del messages[index]
            if outcome.status == "rejected":
                record = batch.records[index]
                letters[index] = DeadLetter(
                    record, outcome.code or "rejected", outcome.reason or "", batch.attempts[index]
                )
                rejected.append(index)
            else:
                batch.settled[index] = True
                settled[outcome.status] = settled.get(outcome.status, 0) + 1
        written |= await self._write({i: letters[i] for i in rejected})
        for index in written:
            letters.pop(index, None)
            batch.settled[index] = True
        if written:
            settled["dead_lettered"] = len(written)
        for name, count in settled.items():
            self.hooks.settled(name, count)
        if letters and failure is None:
            failure = "dead-letter topic unavailable"
        if retry_after:
            await self._sleep(retry_after)
        return failure

    async def _write(self, letters: dict[int, DeadLetter]) -> set[int]:
        if not letters:
            return set()
        refs = await self.dead_letters.write(list(letters.values()))
        return {index for index, letter in letters.items() if letter.ref in refs}

    async def _submit(self, messages: list[IngestMessage]) -> list[Outcome]:
        if not messages:
            return []
        try:
            outcomes = await self.sink.submit(messages)
        except Exception as exc:  # a sink must not raise; if it does, retrying is safe, dropping is not
            log.warning("ingest sink raised %s; retrying the batch", type(exc).__name__)
            return [Outcome.failed("sink_error", f"sink raised {type(exc).__name__}")] * len(messages)
        if len(outcomes) != len(messages):
            return [Outcome.failed("sink_error", "the sink answered the wrong number of outcomes")] * len(
                messages
            )
        return outcomes

    def _commit_prefix(self, batch: _Batch) -> None:
        """Mark committable everything before the first unsettled record."""
        first_open = next((i for i, done in enumerate(batch.settled) if not done), len(batch.records))
        if first_open:
            self.hooks.commit(self.tp, batch.records[first_open - 1].offset + 1)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the partition is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)
