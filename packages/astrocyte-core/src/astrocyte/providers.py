"""Service-provider interfaces and how implementations are found.

A provider is named in ``astrocyte.yaml`` either by entry-point name (``store: sqlite``) or by a
``module:Class`` path (``store: mypkg.stores:MyStore``). It is built as ``Class(config_mapping)``
where the mapping is the matching ``*_config`` block. A class may expose ``validate_config(mapping)``
(raising :class:`~astrocyte.errors.ConfigError`) so bad keys are reported at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

from astrocyte.errors import ConfigError
from astrocyte.types import (
    BankStats,
    ComponentHealth,
    ForgetSelector,
    InsertOutcome,
    MemoryRecord,
    SearchFilters,
    StoredHit,
)

STORES = "astrocyte.stores"
EMBEDDERS = "astrocyte.embedders"
LLMS = "astrocyte.llms"
STREAM_DRIVERS = "astrocyte.ingest_stream_drivers"
POLL_DRIVERS = "astrocyte.ingest_poll_drivers"


@runtime_checkable
class Store(Protocol):
    """Vector + keyword search with filters and exact idempotency lookup, isolated per bank.

    Optional methods the engine uses when present: ``hybrid_search`` (both search arms in one call)
    and ``find_keys(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]`` (the memory id
    holding each stored ``(bank_id, idempotency_key)``).

    Optional methods for "one memory per external object" (an issue, a comment): without them a
    retain carrying ``memory_key`` is refused with ``NotSupportedError(code="memory_keys_not_supported")``.

    - ``upsert_keyed(records) -> list[InsertOutcome]``: every record carries ``memory_key``. When
      the bank holds a memory under that key with the record's idempotency key, the record is a
      duplicate (nothing written). Otherwise, atomically (also against concurrent writers of the same
      key): the memory held under the key, if any, is deleted with its chunks and search entries,
      and the record is written *under that memory's id* (the id of an object's memory is stable);
      the key then names it. Records of one call sharing a key apply in order (the last wins).
    - ``forget_keys(bank_id, memory_keys) -> int``: delete the memories held under those keys.

    ``release_lease(name, holder) -> bool`` (optional): give up a lease ``holder`` holds, so
    another replica may take it at once; True when it was held by ``holder``. Without it a lease
    simply expires.

    Every method is safe to call concurrently from many tasks. Writes are atomic per call:
    ``insert`` either writes a record whole (all chunks) or not at all.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def create_bank(self, bank_id: str) -> bool:
        """Create the bank if absent. Returns True when it was created by this call."""
        ...

    async def bank_exists(self, bank_id: str) -> bool: ...
    async def list_banks(self) -> list[str]: ...
    async def delete_bank(self, bank_id: str) -> int:
        """Delete the bank and its memories; returns how many memories went with it."""
        ...

    async def bank_stats(self, bank_id: str) -> BankStats: ...

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """Write records (creating their banks when absent), deduplicating on
        ``(bank_id, idempotency_key)`` atomically, also against concurrent writers and within the
        batch. A record whose ``memory_id`` its bank already holds is a duplicate too (first write
        wins: nothing is overwritten). Raises ``ValidationError(code="embedding_dimension_mismatch")``
        before writing anything when a vector's size differs from the store's."""
        ...

    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by cosine similarity (score in [-1, 1]), best first."""
        ...

    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by full-text relevance (higher is better), best first."""
        ...

    async def count(self, bank_ids: Sequence[str], filters: SearchFilters) -> int:
        """How many memories (not chunks) match the filters."""
        ...

    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        """Delete matching memories with all their chunks; returns the number of memories."""
        ...

    async def get_state(self, namespace: str, key: str) -> str | None:
        """Small durable key/value state (ingest cursors)."""
        ...

    async def set_state(self, namespace: str, key: str, value: str) -> None: ...

    async def try_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew a named lease; True when ``holder`` holds it for ``ttl_seconds`` more."""
        ...

    async def health(self) -> ComponentHealth: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dimensions`` size.

    Optional attribute ``remote`` (default true): when embedding costs a remote call, the engine
    first asks the store (``find_keys``) which idempotency keys of a retain batch are already stored
    and does not embed those again. A local embedder sets ``remote = False`` to skip the lookup."""

    dimensions: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape ``(len(texts), dimensions)``, float32, rows L2-normalised."""
        ...

    async def close(self) -> None: ...
    async def health(self) -> ComponentHealth: ...


@runtime_checkable
class LLM(Protocol):
    """A chat model used by reflect."""

    async def complete(self, system: str, user: str, *, max_tokens: int | None = None) -> str: ...
    async def close(self) -> None: ...
    async def health(self) -> ComponentHealth: ...


def store_method(store: Any, name: str, code: str, what: str) -> Any:
    """The optional store method ``name``, or raise ``NotSupportedError(code=code)`` saying ``what``
    needs it: a third-party store without it fails clearly instead of silently writing copies."""
    method = getattr(store, name, None)
    if not callable(method):
        from astrocyte.errors import NotSupportedError

        raise NotSupportedError(
            f"{what} needs a store with {name}(); {type(store).__name__} does not provide it "
            "(the memory, sqlite and postgres stores do)",
            code=code,
        )
    return method


def load_class(group: str, name: str) -> type[Any]:
    """Resolve ``name`` from entry-point ``group`` or as a ``module:Class`` path."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import provider {name!r}: {exc}", code="provider_not_found") from exc
    matches = entry_points(group=group, name=name)
    if not matches:
        known = sorted(ep.name for ep in entry_points(group=group))
        raise ConfigError(
            f"no provider named {name!r} in {group}; installed: {', '.join(known) or 'none'}",
            code="provider_not_found",
        )
    try:
        return next(iter(matches)).load()  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ConfigError(
            f"provider {name!r} in {group} is installed but cannot load ({exc}); "
            "is an optional dependency missing?",
            code="provider_not_found",
        ) from exc


def build(group: str, name: str, config: Mapping[str, Any] | None) -> Any:
    """Load, validate the config of, and construct a provider."""
    cls = load_class(group, name)
    mapping = dict(config or {})
    validate = getattr(cls, "validate_config", None)
    if callable(validate):
        validate(mapping)
    return cls(mapping)
