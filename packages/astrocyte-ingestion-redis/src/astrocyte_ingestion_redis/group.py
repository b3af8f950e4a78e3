"""The consumer-group commands the driver uses, in one place.

Everything here is a thin, typed wrapper over one or two Redis commands; the decisions (what to
read when, what to acknowledge) live in the driver. Entry ids and stream keys are ``str``; field
names and values stay ``bytes`` (Redis is binary-safe and so is the dead-letter copy).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from astrocyte_ingestion_redis.config import RedisStreamConfig
from astrocyte_ingestion_redis.decode import RawFields, entry_ref

# XACK first, and only when that entry was still pending write the dead letter: atomic (a script
# runs whole, and reaches the AOF whole), and exactly once even when two consumers hold the same
# entry after a claim.
DEAD_LETTER_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  if ARGV[3] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
  else
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
  end
end
return acked
"""

ORIGINAL_FIELD_PREFIX = b"orig:"


@dataclass(slots=True)
class Delivered:
    """One entry handed to this consumer. ``fields`` is empty when the entry was deleted from the
    stream while still pending; ``deliveries`` is Redis's delivery count for it."""

    stream: str
    entry_id: str
    fields: RawFields
    deliveries: int = 1

    @property
    def ref(self) -> str:
        return entry_ref(self.stream, self.entry_id)


@dataclass(slots=True)
class GroupStats:
    """Group-wide figures for health: entries pending (delivered, unacknowledged) and lag."""

    pending: int = 0
    lag: int | None = 0
    checked_at: float = field(default_factory=time.monotonic)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ConsumerGroup:
    """One consumer in the configured group, across the configured streams."""

    def __init__(self, client: Redis, config: RedisStreamConfig, consumer: str, source_id: str) -> None:
        self.client = client
        self.config = config
        self.consumer = consumer
        self.source_id = source_id
        self.group = config.group

    async def ensure(self) -> None:
        """Create the group on every stream when missing (``MKSTREAM``), if configured to."""
        for stream in self.config.streams:
            if not self.config.create_group:
                await self.client.xinfo_groups(stream)  # NOGROUP/no such key surfaces below
                continue
            try:
                await self.client.xgroup_create(stream, self.group, id=self.config.start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, ids: Mapping[str, str], count: int, block_ms: int | None) -> list[Delivered]:
        """XREADGROUP: ``>`` for new entries, an id for this consumer's pending entries after it."""
        streams: dict[Any, Any] = dict(ids)
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, streams, count=count, block=block_ms
        )
        batch: list[Delivered] = []
        for stream, entries in reply or []:
            name = _text(stream)
            batch.extend(Delivered(name, _text(entry_id), fields or {}) for entry_id, fields in entries)
        return batch

    async def claim(self, stream: str, cursor: str, count: int) -> tuple[str, list[Delivered]]:
        """XAUTOCLAIM entries idle longer than ``claim_idle_ms``; returns the next cursor."""
        reply: Any = await self.client.xautoclaim(
            stream, self.group, self.consumer, self.config.claim_idle_ms, start_id=cursor, count=count
        )
        next_cursor, entries = _text(reply[0]), reply[1]
        return next_cursor, [Delivered(stream, _text(i), fields or {}) for i, fields in entries]

    async def count_deliveries(self, batch: Sequence[Delivered]) -> None:
        """Fill in ``deliveries`` from XPENDING for entries that were recovered or claimed."""
        by_stream: dict[str, list[Delivered]] = {}
        for item in batch:
            by_stream.setdefault(item.stream, []).append(item)
        for stream, items in by_stream.items():
            rows = await self.client.xpending_range(
                stream, self.group, items[0].entry_id, items[-1].entry_id, len(items) + 1000, self.consumer
            )
            counts = {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}
            for item in items:
                item.deliveries = counts.get(item.entry_id, item.deliveries)

    async def ack(self, items: Iterable[Delivered]) -> None:
        """XACK settled entries, one command per stream, pipelined."""
        by_stream: dict[str, list[str]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        if not by_stream:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            await pipe.execute()

    async def dead_letter(self, item: Delivered, code: str, reason: str) -> bool:
        """Acknowledge ``item`` and copy it to its dead-letter stream, atomically; False when it was
        no longer pending (someone else settled it), in which case nothing is written."""
        fields: list[Any] = [
            b"error", code, b"reason", reason[:2000], b"source", self.source_id,
            b"source_stream", item.stream, b"source_id", item.entry_id, b"source_ref", item.ref,
            b"attempts", item.deliveries, b"group", self.group, b"consumer", self.consumer,
            b"dead_lettered_at", datetime.now(UTC).isoformat(),
        ]  # fmt: skip
        for name, value in item.fields.items():
            fields.extend((ORIGINAL_FIELD_PREFIX + name, value))
        maxlen = self.config.dead_letter_maxlen
        keys = [item.stream, self.config.dead_letter_for(item.stream)]
        args = [self.group, item.entry_id, str(maxlen) if maxlen else "", *fields]
        acked = await self.client.eval(DEAD_LETTER_SCRIPT, len(keys), *keys, *args)
        return int(acked) == 1

    async def stats(self) -> GroupStats:
        """Pending entries and lag of the group summed over its streams (lag None when unknown)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.config.streams:
                pipe.xinfo_groups(stream)
            replies = await pipe.execute(raise_on_error=False)
        stats = GroupStats()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            row = next((g for g in reply if _text(g.get("name")) == self.group), None)
            if row is None:
                continue
            stats.pending += int(row.get("pending") or 0)
            lag = row.get("lag")
            stats.lag = None if lag is None or stats.lag is None else stats.lag + int(lag)
        return stats

    async def forget_self_if_idle(self) -> bool:
        """Remove this consumer's name from the group when it holds no pending entries, so
        replicas with generated names do not pile up in XINFO CONSUMERS."""
        removed = True
        for stream in self.config.streams:
            removed &= int(await self.client.eval(FORGET_SCRIPT, 1, stream, self.group, self.consumer)) == 1
        return removed

    async def forget_idle_consumers(self, idle_ms: int) -> list[str]:
        """Remove other consumers' names that hold nothing and were idle longer than ``idle_ms``
        (replicas that died; their entries were claimed). Safe even for a live one: a name without
        pending entries carries no state, and Redis recreates it on that consumer's next read."""
        removed: list[str] = []
        for stream in self.config.streams:
            for row in await self.client.xinfo_consumers(stream, self.group):
                name = _text(row["name"])
                if (
                    name == self.consumer
                    or int(row.get("pending") or 0)
                    or int(row.get("idle") or 0) < idle_ms
                ):
                    continue
                if int(await self.client.eval(FORGET_SCRIPT, 1, stream, self.group, name)) == 1:
                    removed.append(name)
        return removed


# XGROUP DELCONSUMER drops the consumer's pending entries with it, so only ever run it (atomically)
# when that consumer has none.
FORGET_SCRIPT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""
