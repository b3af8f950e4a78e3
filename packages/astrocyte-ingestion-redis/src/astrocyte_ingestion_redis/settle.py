"""Settling one batch: decode, dead-letter poison, submit, retry transient failures, acknowledge.

An entry is acknowledged only once the sink answered ``stored`` or ``duplicate``, or after it was
copied to the dead-letter stream (poison, sink rejection, too many deliveries; the copy and the
acknowledgement are one atomic step). Entries the sink failed transiently are retried with backoff
while reading pauses; when the driver stops, they are left pending for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from astrocyte.ingest.sink import IngestMessage, Outcome, Sink

from astrocyte_ingestion_redis.backoff import Backoff
from astrocyte_ingestion_redis.config import RedisStreamConfig
from astrocyte_ingestion_redis.decode import PoisonEntry, decoder_for
from astrocyte_ingestion_redis.group import ConsumerGroup, Delivered

log = logging.getLogger("astrocyte_ingestion_redis")


@dataclass(slots=True)
class SettleHooks:
    """How a batch tells the driver it is backing off (pause reading) or recovered.

    ``backing_off(outcome, delay, first)`` is called before every wait (``first`` on the first of a
    batch); ``recovered()`` once after a batch that backed off is done."""

    backing_off: Callable[[Outcome, float, bool], None]
    recovered: Callable[[], None]
    stopping: asyncio.Event


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
        """Settle every entry of ``batch`` (entry order per stream is kept for the sink)."""
        # Entries and their messages in two parallel lists: no pair object per entry to collect.
        items: list[Delivered] = []
        messages: list[IngestMessage] = []
        deleted: list[Delivered] = []
        decode, max_deliveries = self._decode, self.config.max_deliveries
        for item in batch:
            if not item.fields:  # deleted from the stream while pending: nothing left to store
                deleted.append(item)
            elif item.deliveries > max_deliveries:
                await self.group.dead_letter(
                    item,
                    "max_deliveries_exceeded",
                    f"delivered {item.deliveries} times (max_deliveries is {max_deliveries})",
                )
            else:
                try:
                    messages.append(decode(item.stream, item.entry_id, item.fields))
                except PoisonEntry as poison:
                    await self.group.dead_letter(item, poison.code, poison.reason)
                else:
                    items.append(item)
        await self.group.ack(deleted)
        await self._submit_until_settled(items, messages)

    async def _submit_until_settled(self, items: list[Delivered], messages: list[IngestMessage]) -> None:
        backoff = Backoff(self.config.backoff_initial_ms / 1000, self.config.backoff_max_ms / 1000)
        failing = False
        try:
            while items:
                outcomes = await self._submit(messages)
                items, messages = await self._apply(items, messages, outcomes)
                if not items:
                    return
                if self.hooks.stopping.is_set():
                    return  # leave them pending: redelivered to whoever reads next
                first = outcomes[next(i for i, o in enumerate(outcomes) if o.status == "failed")]
                delay = max(backoff.next(), max((o.retry_after or 0.0) for o in outcomes))
                self.hooks.backing_off(first, delay, not failing)
                failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hooks.stopping.wait(), timeout=delay)
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

    async def _apply(
        self, items: list[Delivered], messages: list[IngestMessage], outcomes: Sequence[Outcome]
    ) -> tuple[list[Delivered], list[IngestMessage]]:
        """Dead-letter rejections, acknowledge stored/duplicate, return what must be retried."""
        retry_items: list[Delivered] = []
        retry_messages: list[IngestMessage] = []
        settled: list[Delivered] = []
        for item, message, outcome in zip(items, messages, outcomes, strict=True):
            status = outcome.status
            if status == "failed":
                retry_items.append(item)
                retry_messages.append(message)
            elif status == "rejected":
                await self.group.dead_letter(item, outcome.code or "rejected", outcome.reason or "")
            else:
                settled.append(item)
        await self.group.ack(settled)
        return retry_items, retry_messages
