"""Durable driver state kept in the engine's store: cursors, a dead-letter list, and leases.

A poll driver (one that asks an API for changes rather than being pushed them) needs three things
that must outlive its process and be shared by every replica: where it stopped (a cursor), which
entries it gave up on (dead letters), and who polls right now (a lease, so one replica polls each
source). :class:`SourceState` scopes the store's ``get_state``/``set_state`` and ``try_lease``/
``release_lease`` to one source::

    state = SourceState.for_sink(sink, source_id)   # the store behind the gateway's engine
    cursor = await state.get("cursor:octo/repo")
    if await state.lease("octo/repo", holder=replica_id, ttl_seconds=30):
        ...

Leases are wall-clock leases in the store (SQLite: one transaction; PostgreSQL: one conditional
upsert judged by the database's clock), so a holder that dies is replaced once its lease expires.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from astrocyte.errors import ConfigError
from astrocyte.providers import Store

__all__ = ["SourceState"]

_DEAD_LETTERS_KEPT = 1000


class SourceState:
    """One source's slice of the store's durable state (namespace ``ingest:<source_id>``)."""

    def __init__(self, store: Store, source_id: str) -> None:
        self.store = store
        self.source_id = source_id
        self.namespace = f"ingest:{source_id}"

    @classmethod
    def for_sink(cls, sink: Any, source_id: str) -> SourceState:
        """The state behind a sink built by the core (:class:`~astrocyte.ingest.sink.IngestSink`);
        ``ConfigError`` when the sink has no store to keep it in."""
        store = getattr(sink, "store", None)
        if store is None or not callable(getattr(store, "try_lease", None)):
            raise ConfigError(
                f"source {source_id!r} needs durable state (cursor, lease) but its sink has no store; "
                "run it under the core's supervisor or pass state=SourceState(store, source_id)",
                code="ingest_state_missing",
            )
        return cls(store, source_id)

    async def get(self, key: str) -> str | None:
        return await self.store.get_state(self.namespace, key)

    async def set(self, key: str, value: str) -> None:
        await self.store.set_state(self.namespace, key, value)

    async def get_json(self, key: str) -> Any:
        raw = await self.get(key)
        return None if raw is None else json.loads(raw)

    async def set_json(self, key: str, value: Any) -> None:
        await self.set(key, json.dumps(value, sort_keys=True, separators=(",", ":")))

    async def lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the source's lease ``name``; True while ``holder`` holds it."""
        return await self.store.try_lease(f"{self.namespace}:{name}", holder, ttl_seconds)

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up at once when the store can (else it expires on its own)."""
        release = getattr(self.store, "release_lease", None)
        if callable(release):
            await release(f"{self.namespace}:{name}", holder)

    async def dead_letter(self, ref: str, entry: Mapping[str, Any]) -> bool:
        """Append an entry to the source's dead-letter list (the newest 1000 are kept); an entry
        already there under ``ref`` is not added twice. True when it was added now."""
        letters = await self.dead_letters()
        if any(letter.get("ref") == ref for letter in letters):
            return False
        letters.append({"ref": ref, **entry})
        await self.set_json("dead_letters", letters[-_DEAD_LETTERS_KEPT:])
        return True

    async def dead_letters(self) -> list[dict[str, Any]]:
        return list(await self.get_json("dead_letters") or [])
