"""Settling one batch: decode, submit, retry transient failures, acknowledge, dead-letter.

The valid entries of a batch go to the sink first, before any dead-letter write: they are in the
consumer's hands, and whatever happens to the dead-letter step (Redis restarting, a connection
killed, a dead-letter key of the wrong type) must not cost them, since Redis's pending list may not
survive to redeliver them (a restart without persistence, a trim). An entry is acknowledged only
once the sink answered ``stored`` or ``duplicate``, or inside the dead-letter script, after its copy
was written (poison, sink rejection, too many deliveries). Redis writes that fail (an
acknowledgement, a dead letter) are retried with backoff until they succeed or the driver stops;
only what is left is retried, and whatever is left at a stop stays pending for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from astrocyte.ingest.sink import IngestMessage, Outcome, Sink, report_dead_lettered
from redis.exceptions import RedisError, ResponseError

from astrocyte_ingestion_redis.backoff import Backoff
from astrocyte_ingestion_redis.config import RedisStreamConfig
from astrocyte_ingestion_redis.decode import PoisonEntry, decoder_for
from astrocyte_ingestion_redis.group import DEAD_LETTERED, ConsumerGroup, Delivered

log = logging.getLogger("astrocyte_ingestion_redis")
T = TypeVar("T")


class Abandoned(Exception):
    """The batch's remaining Redis writes were given up (the driver stops, or the group is gone):
    those entries stay pending, or come back through the recreated group."""


@dataclass(slots=True)
class SettleHooks:
    """How a batch tells the driver what it is doing.

    ``backing_off(outcome, delay, first)`` is called before every wait for a failing sink (``first``
    on the first of a batch); ``recovered()`` once after a batch that backed off is done.
    ``write_failing(detail)`` / ``write_recovered()`` bracket Redis writes of a batch that fail and
    are being retried. ``watch(command)`` runs a Redis command (a callable) so the driver can tell a stalled
    server (it answers nothing) from a quiet one."""

    backing_off: Callable[[Outcome, float, bool], None]
    recovered: Callable[[], None]
    stopping: asyncio.Event
    write_failing: Callable[[str], None]
    write_recovered: Callable[[], None]
    watch: Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    item: Delivered
    code: str
    reason: str
    poison: bool  # never reached the sink (counted through report_dead_lettered)


class BatchSettler:
    """Settles batches for one driver instance."""

    def __init__(
        self, group: ConsumerGroup, sink: Sink, config: RedisStreamConfig, hooks: SettleHooks
    ) -> None:
        self.group = group
        self.sink = sink
        self.config = config
        self.hooks = hooks
        self._decode = decoder_for(config.fields).decode

    async def settle(self, batch: Sequence[Delivered]) -> None:
        """Settle every entry of ``batch`` (entry order per stream is kept for the sink).

        Raises :class:`Abandoned` when it gives up on what is left (stopping, group gone)."""
        # Entries and their messages in two parallel lists: no pair object per entry to collect.
        items: list[Delivered] = []
        messages: list[IngestMessage] = []
        dead: list[_DeadLetter] = []
        deleted: list[Delivered] = []
        decode, max_deliveries = self._decode, self.config.max_deliveries
        for item in batch:
            if not item.fields:  # deleted from the stream while pending: nothing left to store
                deleted.append(item)
            elif item.deliveries > max_deliveries:
                reason = f"delivered {item.deliveries} times (max_deliveries is {max_deliveries})"
                dead.append(_DeadLetter(item, "max_deliveries_exceeded", reason, poison=True))
            else:
                try:
                    messages.append(decode(item.stream, item.entry_id, item.fields))
                except PoisonEntry as poison:
                    dead.append(_DeadLetter(item, poison.code, poison.reason, poison=True))
                else:
                    items.append(item)
        dead.extend(await self._submit_until_settled(items, messages))
        for letter in dead:
            await self._dead_letter(letter)
        if deleted:
            log.warning(
                "redis source %s: %d pending entries were deleted from the stream before they were "
                "stored (trimmed or XDEL'd); nothing is left to store: %s",
                self.group.source_id,
                len(deleted),
                ", ".join(item.ref for item in deleted[:10]),
            )
            await self._write("acknowledge deleted entries", partial(self.group.ack, deleted))

    async def _submit_until_settled(
        self, items: list[Delivered], messages: list[IngestMessage]
    ) -> list[_DeadLetter]:
        """Submit until nothing failed; acknowledge what was stored; return the rejections."""
        backoff = Backoff(self.config.backoff_initial_ms / 1000, self.config.backoff_max_ms / 1000)
        rejected: list[_DeadLetter] = []
        failing = False
        try:
            while items:
                outcomes = await self._submit(messages)
                items, messages, settled = self._sort(items, messages, outcomes, rejected)
                await self._write("acknowledge stored entries", partial(self.group.ack, settled))
                if not items:
                    return rejected
                if self.hooks.stopping.is_set():
                    raise Abandoned("stopping with entries the sink failed")
                first = outcomes[next(i for i, o in enumerate(outcomes) if o.status == "failed")]
                delay = max(backoff.next(), max((o.retry_after or 0.0) for o in outcomes))
                self.hooks.backing_off(first, delay, not failing)
                failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hooks.stopping.wait(), timeout=delay)
            return rejected
        finally:
            if failing:
                self.hooks.recovered()

    async def _submit(self, messages: list[IngestMessage]) -> list[Outcome]:
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

    @staticmethod
    def _sort(
        items: list[Delivered],
        messages: list[IngestMessage],
        outcomes: Sequence[Outcome],
        rejected: list[_DeadLetter],
    ) -> tuple[list[Delivered], list[IngestMessage], list[Delivered]]:
        """Split by outcome: (to retry, their messages, settled); rejections go to ``rejected``."""
        retry_items: list[Delivered] = []
        retry_messages: list[IngestMessage] = []
        settled: list[Delivered] = []
        for item, message, outcome in zip(items, messages, outcomes, strict=True):
            status = outcome.status
            if status == "failed":
                retry_items.append(item)
                retry_messages.append(message)
            elif status == "rejected":
                rejected.append(
                    _DeadLetter(item, outcome.code or "rejected", outcome.reason or "", poison=False)
                )
            else:
                settled.append(item)
        return retry_items, retry_messages, settled

    async def _dead_letter(self, letter: _DeadLetter) -> None:
        result = await self._write(
            f"dead-letter {letter.item.ref}",
            partial(self.group.dead_letter, letter.item, letter.code, letter.reason),
        )
        if result == DEAD_LETTERED and letter.poison:
            report_dead_lettered(self.sink, letter.item.ref, letter.code, letter.reason)

    async def _write(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis write, retrying with backoff while it fails; raise :class:`Abandoned` when
        the driver stops meanwhile or the group is gone (its entries come back through the new one)."""
        backoff = Backoff(self.config.backoff_initial_ms / 1000, self.config.reconnect_max_ms / 1000)
        failing = False
        try:
            while True:
                try:
                    return await self.hooks.watch(command)
                except (RedisError, OSError) as exc:
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        raise Abandoned(f"{what}: the consumer group is gone") from exc
                    detail = f"{what} failed: {type(exc).__name__}: {exc}"
                    if not failing:
                        log.warning("redis source %s: %s; retrying", self.group.source_id, detail)
                        self.hooks.write_failing(detail)
                        failing = True
                if self.hooks.stopping.is_set():
                    raise Abandoned(f"{what}: stopping")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hooks.stopping.wait(), timeout=backoff.next())
        finally:
            if failing:
                self.hooks.write_recovered()
