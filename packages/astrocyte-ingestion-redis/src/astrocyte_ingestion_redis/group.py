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

# Dead-lettering, in one script (it runs whole and reaches the AOF whole). Redis does not roll a
# script back when a command fails, so every check comes before the first write and the XACK comes
# last: a failure anywhere leaves the entry pending. Exactly once: an entry no longer pending (someone
# else settled it) writes nothing; one already in the index of dead-lettered ids (a recreated group,
# a claim or a replay delivered it again) is only acknowledged. Index members whose id is older than
# the source stream's first entry can never be delivered again, so each call prunes them.
# Returns 1 (dead-lettered now), 2 (already dead-lettered: acknowledged only), 0 (not pending).
DEAD_LETTER_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local function holds(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == wanted
end
if not holds(KEYS[2], 'stream') then
  return redis.error_reply('DEADLETTER_WRONGTYPE dead-letter key ' .. KEYS[2] .. ' is not a stream')
end
if not holds(KEYS[3], 'zset') then
  return redis.error_reply('DEADLETTER_WRONGTYPE dead-letter index ' .. KEYS[3] .. ' is not a sorted set')
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return 0
end
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 2
end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
else
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
end
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
redis.call('ZADD', KEYS[3], ms(ARGV[2]), ARGV[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if first then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ms(first[1]))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
DEAD_LETTERED, ALREADY_DEAD_LETTERED, NOT_PENDING = 1, 2, 0

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


@dataclass(frozen=True, slots=True)
class GroupCreated:
    """A group :meth:`ConsumerGroup.ensure` had to create: on a stream that existed (``length``
    entries, re-read from ``start_id``) or on one it created empty (``MKSTREAM``)."""

    stream: str
    stream_existed: bool
    start_id: str
    length: int


@dataclass(slots=True)
class Claimed:
    """One XAUTOCLAIM page: the next cursor, the entries claimed, and the ids Redis dropped from the
    pending list because they were no longer in the stream."""

    cursor: str
    entries: list[Delivered]
    deleted: list[str]


@dataclass(slots=True)
class GroupStats:
    """Group-wide figures for health: entries pending (delivered, unacknowledged) and lag."""

    pending: int = 0
    lag: int | None = 0
    checked_at: float = field(default_factory=time.monotonic)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def true_lag(group: Mapping[str, Any], stream: Mapping[str, Any]) -> int | None:
    """Entries of the stream the group has not been delivered yet, or None when Redis cannot tell.

    ``XINFO GROUPS`` lag is ``entries-added - entries-read``, which Redis 7.0 keeps after a trim: the
    undelivered entries trimmed away stay counted forever. So Redis's figure is used only while
    nothing was ever removed from the stream; otherwise the lag is 0 when the group has caught up,
    the stream's length when the group is behind its first entry, and unknown (None) in between."""
    last_delivered = _id(group.get("last-delivered-id") or "0-0")
    last = _id(stream.get("last-generated-id") or "0-0")
    length = int(stream.get("length") or 0)
    if last_delivered >= last or length == 0:
        return 0
    first_entry = stream.get("first-entry")
    if first_entry and last_delivered < _id(first_entry[0]):
        return length
    lag = group.get("lag")
    added = stream.get("entries-added")
    if lag is None or added is None or int(added) != length:
        return None
    return int(lag)


class ConsumerGroup:
    """One consumer in the configured group, across the configured streams."""

    def __init__(self, client: Redis, config: RedisStreamConfig, consumer: str, source_id: str) -> None:
        self.client = client
        self.config = config
        self.consumer = consumer
        self.source_id = source_id
        self.group = config.group

    async def ensure(self) -> list[GroupCreated]:
        """Check the dead-letter keys and create the group on every stream when missing
        (``MKSTREAM``), if configured to; returns what had to be created."""
        await self.check_dead_letter_keys()
        created: list[GroupCreated] = []
        for stream in self.config.streams:
            if not self.config.create_group:
                await self.client.xinfo_groups(stream)  # NOGROUP/no such key surfaces below
                continue
            existed = _text(await self.client.type(stream)) != "none"
            try:
                await self.client.xgroup_create(stream, self.group, id=self.config.start_id, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                continue
            length = int(await self.client.xlen(stream)) if existed else 0
            created.append(GroupCreated(stream, existed, self.config.start_id, length))
        return created

    async def check_dead_letter_keys(self) -> None:
        """Refuse (``WRONGTYPE``, fatal) a dead-letter key or index holding another type: every
        dead letter would fail, and each poison entry would stay pending."""
        keys = [
            (key, wanted)
            for stream in self.config.streams
            for key, wanted in (
                (self.config.dead_letter_for(stream), "stream"),
                (self.dead_letter_index(stream), "zset"),
            )
        ]
        async with self.client.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.type(key)
            kinds = await pipe.execute()
        for (key, wanted), kind in zip(keys, kinds, strict=True):
            kind = _text(kind)
            if kind not in ("none", wanted):
                raise ResponseError(
                    f"WRONGTYPE the dead-letter key {key!r} holds a {kind}, not a {wanted}: rename or "
                    "delete it, or point dead_letter_stream elsewhere (nothing was read)"
                )

    async def present_dead_letter_streams(self) -> set[str]:
        """The dead-letter streams that exist now (to notice them vanish with a restart)."""
        keys = [self.config.dead_letter_for(stream) for stream in self.config.streams]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            kinds = await pipe.execute()
        return {key for key, kind in zip(keys, kinds, strict=True) if _text(kind) != "none"}

    def dead_letter_index(self, stream: str) -> str:
        """The sorted set of entry ids of ``stream`` already dead-lettered (``<dead-letter key>:seen``)."""
        return f"{self.config.dead_letter_for(stream)}:seen"

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

    async def claim(self, stream: str, cursor: str, count: int) -> Claimed:
        """XAUTOCLAIM entries idle longer than ``claim_idle_ms``. Redis 7 also drops pending entries
        no longer in the stream (trimmed or deleted under a dead consumer) and names them."""
        reply: Any = await self.client.xautoclaim(
            stream, self.group, self.consumer, self.config.claim_idle_ms, start_id=cursor, count=count
        )
        entries = [Delivered(stream, _text(i), fields or {}) for i, fields in reply[1]]
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        return Claimed(_text(reply[0]), entries, deleted)

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

    async def dead_letter(self, item: Delivered, code: str, reason: str) -> int:
        """Copy ``item`` to its dead-letter stream and acknowledge it, atomically and once per entry:
        :data:`DEAD_LETTERED`, :data:`ALREADY_DEAD_LETTERED` (acknowledged, nothing written) or
        :data:`NOT_PENDING` (someone else settled it; nothing written). Raises on a Redis error, and
        then the entry is still pending."""
        fields: list[Any] = [
            b"error", code, b"reason", reason[:2000], b"source", self.source_id,
            b"source_stream", item.stream, b"source_id", item.entry_id, b"source_ref", item.ref,
            b"attempts", item.deliveries, b"group", self.group, b"consumer", self.consumer,
            b"dead_lettered_at", datetime.now(UTC).isoformat(),
        ]  # fmt: skip
        for name, value in item.fields.items():
            fields.extend((ORIGINAL_FIELD_PREFIX + name, value))
        maxlen = self.config.dead_letter_maxlen
        keys = [item.stream, self.config.dead_letter_for(item.stream), self.dead_letter_index(item.stream)]
        args = [self.group, item.entry_id, str(maxlen) if maxlen else "", *fields]
        return int(await self.client.eval(DEAD_LETTER_SCRIPT, len(keys), *keys, *args))

    async def stats(self) -> GroupStats:
        """Pending entries and lag of the group summed over its streams (lag None when unknown)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.config.streams:
                pipe.xinfo_groups(stream)
                pipe.xinfo_stream(stream)
            replies = await pipe.execute(raise_on_error=False)
        stats = GroupStats()
        for groups, info in zip(replies[::2], replies[1::2], strict=True):
            for reply in (groups, info):
                if isinstance(reply, Exception):
                    raise reply
            row = next((g for g in groups if _text(g.get("name")) == self.group), None)
            if row is None:
                continue
            stats.pending += int(row.get("pending") or 0)
            lag = true_lag(row, info)
            stats.lag = None if lag is None or stats.lag is None else stats.lag + lag
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
