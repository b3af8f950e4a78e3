"""Plain result and record types. They serialise to JSON with these field names (``to_dict``);
the HTTP API uses them as they are."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class AstrocyteContext:
    """Who is calling. ``principal`` is ``user:<id>``, ``agent:<id>`` or ``service:<id>``.

    ``acting_for`` is set when a trusted service calls on behalf of an end user; the effective
    permissions are then the intersection of both principals' grants.
    """

    principal: str | None = None
    acting_for: str | None = None
    source: str | None = None  # ingest source id when the call comes from a driver


# -- results -------------------------------------------------------------------------------------


@dataclass(slots=True)
class RetainResult(_Serialisable):
    stored: bool
    memory_id: str | None = None
    deduplicated: bool = False
    error: str | None = None


@dataclass(slots=True)
class MemoryHit(_Serialisable):
    memory_id: str
    bank_id: str
    text: str
    score: float
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    retained_at: datetime | None = None
    source: str | None = None
    authority_tier: str | None = None


@dataclass(slots=True)
class RecallResult(_Serialisable):
    hits: list[MemoryHit]
    total_available: int
    truncated: bool
    trace: dict[str, Any] = field(default_factory=dict)
    authority_context: str | None = None


@dataclass(slots=True)
class ReflectResult(_Serialisable):
    answer: str
    confidence: float
    sources: list[MemoryHit] = field(default_factory=list)


@dataclass(slots=True)
class ForgetResult(_Serialisable):
    deleted_count: int


@dataclass(slots=True)
class BankInfo(_Serialisable):
    bank_id: str
    created_at: datetime | None = None


@dataclass(slots=True)
class BankStats(_Serialisable):
    bank_id: str
    memory_count: int
    chunk_count: int
    oldest_retained_at: datetime | None = None
    newest_retained_at: datetime | None = None


@dataclass(slots=True)
class ComponentHealth(_Serialisable):
    name: str
    healthy: bool
    detail: str | None = None
    latency_ms: float | None = None


@dataclass(slots=True)
class HealthReport(_Serialisable):
    healthy: bool
    components: list[ComponentHealth]


# -- store records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """One searchable piece of a memory. ``embedding`` is a float32 vector, L2-normalised."""

    index: int
    text: str
    embedding: np.ndarray


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """A memory as handed to a store: already validated, filtered, chunked and embedded."""

    memory_id: str
    bank_id: str
    text: str
    chunks: tuple[Chunk, ...]
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    retained_at: datetime = field(default_factory=lambda: datetime.now().astimezone())
    source: str | None = None
    idempotency_key: str | None = None
    # A stable name for the external object this memory mirrors (see Store.upsert_keyed): a
    # record with a key the bank holds under another idempotency key replaces that memory.
    memory_key: str | None = None


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    """Per record: the id that now holds it, and whether an earlier record with the same
    idempotency key in the same bank already did (then nothing was written)."""

    memory_id: str
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Filters every store applies identically. ``tags``: a hit must carry all of them.
    Time bounds apply to ``occurred_at`` when set, else ``retained_at``; ``start`` inclusive,
    ``end`` exclusive."""

    tags: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredHit:
    """A chunk-level hit from one search arm, before fusion. Higher ``score`` is better."""

    memory_id: str
    bank_id: str
    chunk_index: int
    text: str
    score: float
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    occurred_at: datetime | None
    retained_at: datetime
    source: str | None


@dataclass(frozen=True, slots=True)
class ForgetSelector:
    """What to delete from one bank. Selectors combine with AND; ``all_`` deletes the whole bank
    content and must be the only selector."""

    memory_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    before: datetime | None = None
    all_: bool = False

    def check(self) -> None:
        """Raise ``ValidationError`` unless exactly one of "some selectors" or ``all_`` is given:
        an empty selector must never mean "everything"."""
        from astrocyte.errors import ValidationError

        others = bool(self.memory_ids or self.tags or self.before is not None)
        if self.all_ and others:
            raise ValidationError(
                "forget with all_ must not be combined with other selectors", code="forget_selector_invalid"
            )
        if not self.all_ and not others:
            raise ValidationError(
                "forget needs memory_ids, tags, before, or all_ (to clear the whole bank)",
                code="forget_selector_empty",
            )


PermissionName = Literal["read", "write", "forget", "admin"]


@dataclass(frozen=True, slots=True)
class RetainRequest:
    """One item of :meth:`Astrocyte.retain_many` (the batched path used by ingestion)."""

    content: str
    bank_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    occurred_at: datetime | None = None
    source: str | None = None
    idempotency_key: str | None = None
    # One memory per external object: a new version (another idempotency key) under the same
    # key replaces the bank's memory for it instead of adding a copy.
    memory_key: str | None = None
