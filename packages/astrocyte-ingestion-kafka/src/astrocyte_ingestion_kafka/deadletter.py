"""The dead-letter topic: writing poison records once, and never twice.

Every dead letter's record key is its source reference ``topic:partition:offset`` and it carries a
``group`` header. Before writing, the :class:`DeadLetterLedger` reads the dead-letter topic up to
its current end (incrementally: only what is new since the last look) and skips any record already
dead-lettered by this group, by this process or by any earlier one. So a record re-read after a
crash before its commit, a rebalance, or a group whose offsets were reset or deleted is committed
without a second dead letter. The write itself is acknowledged by all in-sync replicas from an
idempotent producer (its own retries never duplicate) before the source offset is committed.

The ledger holds one reference per dead letter of this group: memory grows with the dead-letter
topic, which retention bounds (a record re-read after its dead letter expired is dead-lettered
again; see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from astrocyte.ingest.sink import Sink, report_dead_lettered

from astrocyte_ingestion_kafka.config import KafkaSourceConfig
from astrocyte_ingestion_kafka.decode import Record, record_ref

log = logging.getLogger("astrocyte_ingestion_kafka")
ORIGINAL_HEADER_PREFIX = "original."


@dataclass(slots=True)
class DeadLetter:
    """One record to dead-letter, with why and after how many attempts."""

    record: Record
    code: str
    reason: str
    attempts: int
    poison: bool = False  # never reached the sink, so the sink is told once it is written

    @property
    def ref(self) -> str:
        return record_ref(self.record.topic, self.record.partition, self.record.offset)


class DeadLetterLedger:
    """Which source records this group has dead-lettered, read back from the dead-letter topics."""

    def __init__(self, reader: AIOKafkaConsumer, producer: AIOKafkaProducer, group: str) -> None:
        self._reader = reader
        self._producer = producer
        self._group = group.encode()
        self._seen: set[str] = set()
        self._ends: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()

    def note(self, ref: str) -> None:
        self._seen.add(ref)

    async def already(self, topic: str, refs: Sequence[str]) -> set[str]:
        """Those of ``refs`` already in ``topic`` (read up to its end first)."""
        async with self._lock:
            if any(ref not in self._seen for ref in refs):
                await self._catch_up(topic)
        return {ref for ref in refs if ref in self._seen}

    async def _catch_up(self, topic: str) -> None:
        # partitions_for asks the broker (and creates the topic where auto-creation is on), so a
        # dead-letter topic another process created is found too.
        partitions = await self._producer.partitions_for(topic)
        tps = {TopicPartition(topic, p) for p in partitions}
        new = tps - set(self._ends)
        if new:
            self._reader.assign(list(set(self._ends) | tps))
            for tp in new:
                self._ends[tp] = 0
            await self._reader.seek_to_beginning(*new)
        ends = await self._reader.end_offsets(list(tps))
        behind = [tp for tp in tps if await self._reader.position(tp) < ends[tp]]
        while behind:
            batches = await self._reader.getmany(*behind, timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.key and _header(record.headers, "group") == self._group:
                        self._seen.add(record.key.decode("utf-8", "replace"))
            behind = [tp for tp in behind if await self._reader.position(tp) < ends[tp]]


class DeadLetters:
    """Writes dead letters for one source; ``write`` answers which were settled (written now or
    found already written)."""

    def __init__(
        self, config: KafkaSourceConfig, source_id: str, options: dict[str, Any], sink: Sink
    ) -> None:
        self.config = config
        self.source_id = source_id
        self.sink = sink
        self.producer = AIOKafkaProducer(
            **options, acks="all", enable_idempotence=True, linger_ms=5, max_request_size=_max_request(config)
        )
        self.reader = AIOKafkaConsumer(
            **options, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        self.ledger = DeadLetterLedger(self.reader, self.producer, config.group)
        self.written = 0

    async def start(self) -> None:
        await self.producer.start()
        await self.reader.start()

    async def stop(self) -> None:
        for client in (self.producer, self.reader):
            with contextlib.suppress(Exception):
                await client.stop()

    async def write(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Dead-letter ``letters`` (skipping those already dead-lettered); the refs now settled.
        A letter whose write failed is left out (the caller retries it, and is told nothing else)."""
        settled: set[str] = set()
        by_topic: dict[str, list[DeadLetter]] = {}
        for letter in letters:
            by_topic.setdefault(self.config.dead_letter_for(letter.record.topic), []).append(letter)
        for topic, group in by_topic.items():
            try:
                done = await self.ledger.already(topic, [letter.ref for letter in group])
            except Exception as exc:  # cannot tell what is there: write nothing, retry later
                log.warning("dead-letter topic %s unreadable: %s: %s", topic, type(exc).__name__, exc)
                continue
            settled |= done
            todo = [letter for letter in group if letter.ref not in done]
            sends = [await self.producer.send(topic, **self._letter(letter)) for letter in todo]
            results = await asyncio.gather(*sends, return_exceptions=True)
            for letter, result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("dead letter for %s not written: %s", letter.ref, type(result).__name__)
                    continue
                self.ledger.note(letter.ref)
                settled.add(letter.ref)
                self.written += 1
                if letter.poison:  # the sink never saw it: counted and logged like a rejection
                    report_dead_lettered(self.sink, letter.ref, letter.code, letter.reason)
        return settled

    def _letter(self, letter: DeadLetter) -> dict[str, Any]:
        record = letter.record
        headers: list[tuple[str, bytes]] = [
            ("error_code", letter.code.encode()),
            ("error_reason", letter.reason[:2000].encode()),
            ("source", self.source_id.encode()),
            ("group", self.config.group.encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("attempts", str(letter.attempts).encode()),
            ("dead_lettered_at", datetime.now(UTC).isoformat().encode()),
        ]
        if record.key is not None:
            headers.append(("original_key", record.key))
        headers.extend((ORIGINAL_HEADER_PREFIX + name, value or b"") for name, value in record.headers)
        return {"key": letter.ref.encode(), "value": record.value, "headers": headers}


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def _max_request(config: KafkaSourceConfig) -> int:
    """Room for the largest record the driver accepts plus the dead-letter headers."""
    return max(1_048_576, config.max_record_bytes + 16_384)
