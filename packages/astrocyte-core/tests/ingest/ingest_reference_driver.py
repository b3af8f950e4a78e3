"""Test-only: an in-process log transport and a reference driver on it that honours the ingest
contract, plus deliberately broken variants the contract kit must catch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from astrocyte.ingest.driver import DriverConfig, DriverHealth, DriverState, validate_model
from astrocyte.ingest.sink import IngestMessage, Sink, report_dead_lettered
from astrocyte.testing.ingest_contract import ContractMessage, IngestHarness

TRANSPORTS: dict[str, LogTransport] = {}


@dataclass(slots=True)
class Entry:
    offset: int
    payload: bytes


class LogTransport:
    """An append-only log with one committed offset (one consumer group) and a dead-letter list."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[bytes] = []
        self.committed = 0
        self.dead_letters: list[tuple[str, str]] = []
        self.broken = False
        self.dead_letters_broken = False
        self._grew = asyncio.Event()

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError(f"transport {self.name} is unreachable")

    def append(self, payload: bytes) -> str:
        self.entries.append(payload)
        self._grew.set()
        return f"{self.name}:{len(self.entries) - 1}"

    async def read(self, offset: int, limit: int, wait: float) -> list[Entry]:
        self._check()
        if offset >= len(self.entries):
            self._grew.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait(), timeout=wait)
            self._check()
        return [Entry(i, self.entries[i]) for i in range(offset, min(len(self.entries), offset + limit))]

    async def commit(self, offset: int) -> None:
        self._check()
        self.committed = max(self.committed, offset)

    async def dead_letter(self, ref: str, error: str) -> None:
        self._check()
        if self.dead_letters_broken:
            raise ConnectionError(f"dead-letter destination of {self.name} refuses writes")
        self.dead_letters.append((ref, error))

    def is_dead_lettered(self, ref: str) -> bool:
        return any(letter == ref for letter, _ in self.dead_letters)


class QueueDriverConfig(DriverConfig):
    transport: str
    batch_size: int = 8
    backoff_initial: float = 0.02
    backoff_max: float = 0.4


@dataclass(frozen=True, slots=True)
class Poison:
    """An entry to dead-letter: its reference and why."""

    ref: str
    code: str
    poison: bool = True  # False for a sink rejection


class _Abandon(Exception):
    """Stopping while a batch still has failed messages: leave them unacknowledged."""


class QueueDriver:
    """The reference: ack (commit) only after every entry of a batch is settled."""

    source_type: ClassVar[Literal["stream", "poll"]] = "stream"

    def __init__(self, source_id: str, config: QueueDriverConfig, *, sink: Sink) -> None:
        self.source_id = source_id
        self.config = config
        self.sink = sink
        self.transport = TRANSPORTS[config.transport]
        self._state: DriverState = "starting"
        self._detail: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> QueueDriverConfig:
        return validate_model(QueueDriverConfig, mapping)

    @classmethod
    def contract_harness(cls) -> QueueHarness:
        """The discovery hook of the ingest contract kit."""
        return QueueHarness(cls)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self, deadline: float) -> None:
        self._stopping.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=deadline)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._state = "stopped"

    async def health(self) -> DriverHealth:
        lag = len(self.transport.entries) - self.transport.committed
        return DriverHealth(self._state, lag=lag, pending=self._in_flight, detail=self._detail)

    async def _loop(self) -> None:
        position: int | None = None
        delay = self.config.backoff_initial
        while not self._stopping.is_set():
            try:
                if position is None:
                    self.transport._check()
                    position = self.transport.committed
                batch = await self.transport.read(position, self.config.batch_size, wait=0.05)
                self._state, self._detail, delay = "running", None, self.config.backoff_initial
                if batch:
                    await self.handle(batch)
                    position = batch[-1].offset + 1
            except ConnectionError as exc:
                self._state, self._detail, position = "degraded", str(exc), None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
            except _Abandon:
                return

    async def handle(self, batch: list[Entry]) -> None:
        """Decode, submit the valid messages, retry failures with backoff, dead-letter poison and
        rejections (retrying until the destination takes them), then commit."""
        decoded = [self.decode(e) for e in batch]
        messages = [m for m in decoded if isinstance(m, IngestMessage)]
        poison = [p for p in decoded if isinstance(p, Poison)]
        self._in_flight = len(messages)
        rejected = await self.settle(messages)
        await self.dead_letter_all(poison + rejected)
        await self.transport.commit(batch[-1].offset + 1)
        self._in_flight = 0

    async def settle(self, messages: Sequence[IngestMessage]) -> list[Poison]:
        """Submit until nothing failed; returns the rejections (to dead-letter)."""
        todo, delay, rejected = list(messages), self.config.backoff_initial, []
        while todo:
            outcomes = await self.sink.submit(todo)
            retry = []
            for message, outcome in zip(todo, outcomes, strict=True):
                if outcome.status == "rejected":
                    rejected.append(Poison(message.raw_ref or "", outcome.code or "rejected", poison=False))
                elif outcome.status == "failed":
                    retry.append(message)
            if retry and self._stopping.is_set():
                raise _Abandon
            if retry:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
            todo = retry
        return rejected

    async def dead_letter_all(self, poison: Sequence[Poison]) -> None:
        """Dead-letter each entry once (an entry seen again after a replay is already there)."""
        for entry in poison:
            await self.dead_letter_once(entry)

    async def dead_letter_once(self, entry: Poison) -> None:
        delay = self.config.backoff_initial
        while not self.transport.is_dead_lettered(entry.ref):
            try:
                await self.transport.dead_letter(entry.ref, entry.code)
                if entry.poison:  # the sink never saw it: count it there (sink rejections it counted)
                    report_dead_lettered(self.sink, entry.ref, entry.code, "poison")
            except ConnectionError as exc:
                if self._stopping.is_set():
                    raise _Abandon from exc
                self._detail = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)

    def decode(self, entry: Entry) -> IngestMessage | Poison | None:
        ref = f"{self.transport.name}:{entry.offset}"
        try:
            payload = json.loads(entry.payload.decode("utf-8"))
        except UnicodeDecodeError:
            return Poison(ref, "undecodable")
        except ValueError:
            return Poison(ref, "bad_json")
        return IngestMessage(
            idempotency_key=ref,
            content=payload["content"],
            bank_id=payload.get("bank_id"),
            tags=tuple(payload.get("tags", ())),
            metadata=payload.get("metadata", {}),
            raw_ref=ref,
        )


class AckFirstDriver(QueueDriver):
    """Broken: commits before the sink answers and forgets failed messages."""

    async def handle(self, batch: list[Entry]) -> None:
        await self.transport.commit(batch[-1].offset + 1)
        messages = [m for m in [self.decode(e) for e in batch] if isinstance(m, IngestMessage)]
        outcomes = await self.sink.submit(messages)
        for message, outcome in zip(messages, outcomes, strict=True):
            if outcome.status == "rejected":
                await self.transport.dead_letter(message.raw_ref or "", outcome.code or "rejected")


class DropsPartlyFailedDriver(QueueDriver):
    """Broken: retries a batch only when all of it failed; a half-failed batch is committed."""

    async def settle(self, messages: Sequence[IngestMessage]) -> list[Poison]:
        while True:
            outcomes = await self.sink.submit(messages)
            if any(o.status != "failed" for o in outcomes) or not messages:
                break
            await asyncio.sleep(self.config.backoff_initial)
        return [
            Poison(m.raw_ref or "", o.code or "rejected")
            for m, o in zip(messages, outcomes, strict=True)
            if o.status == "rejected"
        ]


class DeadLetterFirstDriver(QueueDriver):
    """Broken (the Redis driver's old order): dead-letters poison before submitting the batch, so
    a failing dead-letter destination holds every valid message of the batch back."""

    async def handle(self, batch: list[Entry]) -> None:
        decoded = [self.decode(e) for e in batch]
        await self.dead_letter_all([p for p in decoded if isinstance(p, Poison)])
        messages = [m for m in decoded if isinstance(m, IngestMessage)]
        await self.dead_letter_all(await self.settle(messages))
        await self.transport.commit(batch[-1].offset + 1)


class DeadLettersAgainDriver(QueueDriver):
    """Broken: writes a dead letter for every poison delivery, also for one already there."""

    async def dead_letter_once(self, entry: Poison) -> None:
        await self.transport.dead_letter(entry.ref, entry.code)


class DropPoisonDriver(QueueDriver):
    """Broken: skips entries it cannot decode without dead-lettering them."""

    def decode(self, entry: Entry) -> IngestMessage | Poison | None:
        try:
            payload = json.loads(entry.payload.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            return None
        ref = f"{self.transport.name}:{entry.offset}"
        return IngestMessage(
            idempotency_key=ref,
            content=payload["content"],
            bank_id=payload.get("bank_id"),
            tags=tuple(payload.get("tags", ())),
            raw_ref=ref,
        )


class SilentPoisonDriver(QueueDriver):
    """Broken: dead-letters poison but never tells the sink, so monitoring never counts it."""

    async def dead_letter_all(self, poison: Sequence[Poison]) -> None:
        await super().dead_letter_all([replace(entry, poison=False) for entry in poison])


class NoDrainDriver(QueueDriver):
    """Broken: stop() cancels the in-flight batch at once instead of draining it."""

    async def stop(self, deadline: float) -> None:
        await super().stop(0.0)


class QueueHarness(IngestHarness):
    """Drives :class:`LogTransport` for the contract kit."""

    def __init__(self, driver_class: type[QueueDriver] = QueueDriver) -> None:
        self.driver_class = driver_class
        self.transport = LogTransport("unset")
        self._counter = 0

    async def setup(self) -> None:
        self._counter += 1
        name = f"log{id(self)}-{self._counter}"
        self.transport = TRANSPORTS[name] = LogTransport(name)

    async def teardown(self) -> None:
        TRANSPORTS.pop(self.transport.name, None)

    def build_driver(self, sink: Sink) -> QueueDriver:
        config = self.driver_class.validate_config({"transport": self.transport.name})
        return self.driver_class("contract", config, sink=sink)

    async def publish(self, messages: Sequence[ContractMessage]) -> list[str]:
        return [
            self.transport.append(
                json.dumps(
                    {"content": m.content, "bank_id": m.bank_id, "tags": list(m.tags), "metadata": m.metadata}
                ).encode()
            )
            for m in messages
        ]

    async def publish_poison(self, kind: str) -> str:
        payloads = {
            "undecodable": b"\xff\xfe\xfa",
            "bad_json": b'{"content": ',
            "missing_bank": json.dumps({"content": "no bank here"}).encode(),
        }
        return self.transport.append(payloads[kind])

    async def dead_letter_refs(self) -> list[str]:
        return [ref for ref, _ in self.transport.dead_letters]

    async def break_transport(self) -> None:
        self.transport.broken = True

    async def restore_transport(self) -> None:
        self.transport.broken = False

    async def replay(self) -> None:
        self.transport.committed = 0

    async def break_dead_letters(self) -> None:
        self.transport.dead_letters_broken = True

    async def restore_dead_letters(self) -> None:
        self.transport.dead_letters_broken = False


class HooklessHarness(QueueHarness):
    """A harness written before the optional hooks existed."""

    replay = IngestHarness.replay
    break_dead_letters = IngestHarness.break_dead_letters
    restore_dead_letters = IngestHarness.restore_dead_letters
