"""Test-only: an in-process log transport and a reference driver on it that honours the ingest
contract, plus deliberately broken variants the contract kit must catch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from astrocyte.ingest.driver import DriverConfig, DriverHealth, DriverState, validate_model
from astrocyte.ingest.sink import IngestMessage, Sink
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
        self.dead_letters.append((ref, error))


class QueueDriverConfig(DriverConfig):
    transport: str
    batch_size: int = 8
    backoff_initial: float = 0.02
    backoff_max: float = 0.4


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
        """Decode, dead-letter poison, submit, retry failures with backoff, then commit."""
        messages = [m for m in [await self.decode(e) for e in batch] if m is not None]
        self._in_flight = len(messages)
        await self.settle(messages)
        await self.transport.commit(batch[-1].offset + 1)
        self._in_flight = 0

    async def settle(self, messages: Sequence[IngestMessage]) -> None:
        todo, delay = list(messages), self.config.backoff_initial
        while todo:
            outcomes = await self.sink.submit(todo)
            retry = []
            for message, outcome in zip(todo, outcomes, strict=True):
                if outcome.status == "rejected":
                    await self.transport.dead_letter(message.raw_ref or "", outcome.code or "rejected")
                elif outcome.status == "failed":
                    retry.append(message)
            if retry and self._stopping.is_set():
                raise _Abandon
            if retry:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)
            todo = retry

    async def decode(self, entry: Entry) -> IngestMessage | None:
        ref = f"{self.transport.name}:{entry.offset}"
        try:
            payload = json.loads(entry.payload.decode("utf-8"))
        except UnicodeDecodeError:
            await self.transport.dead_letter(ref, "undecodable")
            return None
        except ValueError:
            await self.transport.dead_letter(ref, "bad_json")
            return None
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
        messages = [m for m in [await self.decode(e) for e in batch] if m is not None]
        outcomes = await self.sink.submit(messages)
        for message, outcome in zip(messages, outcomes, strict=True):
            if outcome.status == "rejected":
                await self.transport.dead_letter(message.raw_ref or "", outcome.code or "rejected")


class DropPoisonDriver(QueueDriver):
    """Broken: skips entries it cannot decode without dead-lettering them."""

    async def decode(self, entry: Entry) -> IngestMessage | None:
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
