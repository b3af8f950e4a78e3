"""``memory``: a fully in-process store for tests and tiny setups.

Everything lives in Python dicts and is lost on close. Search is exact: cosine similarity over
every candidate chunk with numpy, and a small BM25 scorer over lower-cased word tokens. It is the
reference the other stores are compared against by the contract kit, so it favours being obviously
correct over being fast.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from astrocyte.errors import ConfigError, NotFoundError, TooLargeError, ValidationError
from astrocyte.fusion import text_key
from astrocyte.types import (
    BankStats,
    ComponentHealth,
    ForgetSelector,
    InsertOutcome,
    MemoryRecord,
    SearchFilters,
    StoredHit,
)

_ALLOWED_KEYS = frozenset({"max_memories"})
_TOKEN = re.compile(r"\w+")
# Usual BM25 constants; the exact values matter little for a test store.
_BM25_K1 = 1.2
_BM25_B = 0.75


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; anything that is not a word character separates tokens."""
    return _TOKEN.findall(text.lower())


def as_aware(moment: datetime) -> datetime:
    """Treat a naive datetime as UTC so naive and aware values compare instead of raising."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def matches_filters(record: MemoryRecord, filters: SearchFilters) -> bool:
    """The filter rule every store applies: all tags present, and the memory's time
    (``occurred_at`` when set, else ``retained_at``) in ``[start, end)``."""
    if filters.tags and not set(filters.tags).issubset(record.tags):
        return False
    moment = as_aware(record.occurred_at or record.retained_at)
    if filters.start is not None and moment < as_aware(filters.start):
        return False
    return not (filters.end is not None and moment >= as_aware(filters.end))


@dataclass
class _Stored:
    record: MemoryRecord
    chunk_tokens: list[Counter[str]]


@dataclass
class _Bank:
    created_at: datetime
    memories: dict[str, _Stored] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> memory id
    memory_keys: dict[str, str] = field(default_factory=dict)  # memory key -> memory id


class MemoryStore:
    """A correct, simple, in-process :class:`~astrocyte.providers.Store`.

    Config keys: ``max_memories`` (optional positive int): inserts that would exceed it raise
    ``TooLargeError(code="store_full")``.
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        mapping = dict(config or {})
        self.validate_config(mapping)
        self._max_memories: int | None = mapping.get("max_memories")
        self._banks: dict[str, _Bank] = {}
        self._dimension: int | None = None
        self._state: dict[tuple[str, str], str] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> None:
        """Reject unknown keys and a ``max_memories`` that is not a positive integer."""
        unknown = sorted(set(mapping) - _ALLOWED_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) in store_config for the memory store: {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(_ALLOWED_KEYS))}",
                code="config_unknown_key",
            )
        limit = mapping.get("max_memories")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError("store_config.max_memories must be a positive integer", code="config_invalid")

    @classmethod
    def contract_config(cls, tmp_path: Path) -> Mapping[str, Any] | None:
        """Configuration the store contract kit uses to test this store (see astrocyte.testing)."""
        return {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- banks -----------------------------------------------------------------------------------

    async def create_bank(self, bank_id: str) -> bool:
        async with self._lock:
            return self._ensure_bank(bank_id)

    async def bank_exists(self, bank_id: str) -> bool:
        return bank_id in self._banks

    async def list_banks(self) -> list[str]:
        return sorted(self._banks)

    async def delete_bank(self, bank_id: str) -> int:
        async with self._lock:
            bank = self._banks.pop(bank_id, None)
            return len(bank.memories) if bank else 0

    async def bank_stats(self, bank_id: str) -> BankStats:
        bank = self._banks.get(bank_id)
        if bank is None:
            raise NotFoundError(f"bank {bank_id!r} does not exist", code="bank_not_found")
        retained = [s.record.retained_at for s in bank.memories.values()]
        return BankStats(
            bank_id=bank_id,
            memory_count=len(bank.memories),
            chunk_count=sum(len(s.record.chunks) for s in bank.memories.values()),
            oldest_retained_at=min(retained, key=as_aware) if retained else None,
            newest_retained_at=max(retained, key=as_aware) if retained else None,
        )

    def _ensure_bank(self, bank_id: str) -> bool:
        if bank_id in self._banks:
            return False
        self._banks[bank_id] = _Bank(created_at=datetime.now(UTC))
        return True

    # -- writes ----------------------------------------------------------------------------------

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        async with self._lock:
            dimension = self._check_dimensions(records)
            new_ids = self._new_memory_ids(records)
            self._check_capacity(len(new_ids))
            outcomes: list[InsertOutcome] = []
            for record in records:
                outcomes.append(self._insert_one(record))
            if dimension is not None:
                self._dimension = dimension
            return outcomes

    async def find_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The memory id holding each ``(bank_id, idempotency_key)`` of ``keys`` that is stored."""
        async with self._lock:
            found: dict[tuple[str, str], str] = {}
            for bank_id, key in keys:
                bank = self._banks.get(bank_id)
                if bank is not None and key in bank.keys:
                    found[(bank_id, key)] = bank.keys[key]
            return found

    def _check_dimensions(self, records: Sequence[MemoryRecord]) -> int | None:
        """Validate every vector before anything is written; returns the batch's dimension."""
        expected = self._dimension
        for record in records:
            for chunk in record.chunks:
                size = int(np.asarray(chunk.embedding).size)
                if expected is None:
                    expected = size
                elif size != expected:
                    raise ValidationError(
                        f"embedding has {size} dimensions but the store holds {expected}-dimensional "
                        "vectors; use the same embedder (and dimensions) the store was filled with",
                        code="embedding_dimension_mismatch",
                        details={"expected": expected, "got": size},
                    )
        return expected

    def _new_memory_ids(self, records: Sequence[MemoryRecord]) -> set[tuple[str, str]]:
        """The (bank, id) pairs this batch would add after deduplication."""
        seen_keys: set[tuple[str, str]] = set()
        added: set[tuple[str, str]] = set()
        for record in records:
            bank = self._banks.get(record.bank_id)
            if record.idempotency_key is not None:
                scoped = (record.bank_id, record.idempotency_key)
                if scoped in seen_keys or (bank and record.idempotency_key in bank.keys):
                    continue
                seen_keys.add(scoped)
            if not (bank and record.memory_id in bank.memories):
                added.add((record.bank_id, record.memory_id))
        return added

    def _check_capacity(self, adding: int) -> None:
        if self._max_memories is None:
            return
        held = sum(len(b.memories) for b in self._banks.values())
        if held + adding > self._max_memories:
            raise TooLargeError(
                f"the memory store is limited to {self._max_memories} memories (store_config.max_memories)",
                code="store_full",
            )

    def _insert_one(self, record: MemoryRecord) -> InsertOutcome:
        self._ensure_bank(record.bank_id)
        bank = self._banks[record.bank_id]
        key = record.idempotency_key
        if key is not None and key in bank.keys:
            return InsertOutcome(memory_id=bank.keys[key], deduplicated=True)
        if record.memory_id in bank.memories:  # the same memory again: first write wins
            return InsertOutcome(memory_id=record.memory_id, deduplicated=True)
        stored_chunks = tuple(
            type(chunk)(
                index=chunk.index,
                text=chunk.text,
                embedding=np.asarray(chunk.embedding, dtype=np.float32).reshape(-1).copy(),
            )
            for chunk in record.chunks
        )
        # Copy what a caller could mutate later, so the store's content cannot change under it.
        kept = MemoryRecord(
            memory_id=record.memory_id,
            bank_id=record.bank_id,
            text=record.text,
            chunks=stored_chunks,
            tags=tuple(record.tags),
            metadata=copy.deepcopy(record.metadata),
            occurred_at=record.occurred_at,
            retained_at=record.retained_at,
            source=record.source,
            idempotency_key=key,
        )
        bank.memories[record.memory_id] = _Stored(kept, [Counter(tokenize(c.text)) for c in stored_chunks])
        if key is not None:
            bank.keys[key] = record.memory_id
        return InsertOutcome(memory_id=record.memory_id, deduplicated=False)

    async def upsert_keyed(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """One memory per ``(bank_id, memory_key)``: a new version replaces the held one in place
        (same memory id); the same version is a duplicate. See the Store protocol."""
        async with self._lock:
            dimension = self._check_dimensions(records)
            outcomes = [self._upsert_one(record) for record in records]
            if dimension is not None:
                self._dimension = dimension
            return outcomes

    def _upsert_one(self, record: MemoryRecord) -> InsertOutcome:
        if record.memory_key is None:
            raise ValidationError(
                "upsert_keyed needs a memory_key on every record", code="memory_key_missing"
            )
        self._ensure_bank(record.bank_id)
        bank = self._banks[record.bank_id]
        held_id = bank.memory_keys.get(record.memory_key)
        held = bank.memories.get(held_id) if held_id is not None else None
        taken = bank.keys.get(record.idempotency_key) if record.idempotency_key is not None else None
        if taken is not None:  # this version is stored already (under this key or as another memory)
            return InsertOutcome(memory_id=taken, deduplicated=True)
        if held is None:
            self._check_capacity(1)
        else:
            self._drop(bank, held.record.memory_id)
            record = dataclasses.replace(record, memory_id=held.record.memory_id)
        outcome = self._insert_one(record)
        bank.memory_keys[record.memory_key] = outcome.memory_id  # type: ignore[index]
        return InsertOutcome(memory_id=outcome.memory_id, deduplicated=False)

    async def forget_keys(self, bank_id: str, memory_keys: Sequence[str]) -> int:
        """Delete the memories held under ``memory_keys``; returns how many went."""
        async with self._lock:
            bank = self._banks.get(bank_id)
            if bank is None:
                return 0
            deleted = 0
            for key in memory_keys:
                memory_id = bank.memory_keys.pop(key, None)
                if memory_id is not None and memory_id in bank.memories:
                    self._drop(bank, memory_id)
                    deleted += 1
            return deleted

    @staticmethod
    def _drop(bank: _Bank, memory_id: str) -> None:
        key = bank.memories.pop(memory_id).record.idempotency_key
        if key is not None:
            bank.keys.pop(key, None)

    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        selector.check()
        async with self._lock:
            bank = self._banks.get(bank_id)
            if bank is None:
                return 0
            doomed = [mid for mid, s in bank.memories.items() if _selected(s.record, selector)]
            for memory_id in doomed:
                key = bank.memories.pop(memory_id).record.idempotency_key
                if key is not None:
                    bank.keys.pop(key, None)
            return len(doomed)

    # -- search ----------------------------------------------------------------------------------

    def _candidates(self, bank_ids: Iterable[str], filters: SearchFilters) -> list[_Stored]:
        found: list[_Stored] = []
        for bank_id in dict.fromkeys(bank_ids):
            bank = self._banks.get(bank_id)
            if bank is not None:
                found.extend(s for s in bank.memories.values() if matches_filters(s.record, filters))
        return found

    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        if k <= 0:
            return []
        pairs = [(s, c) for s in self._candidates(bank_ids, filters) for c in s.record.chunks]
        if not pairs:
            return []
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        matrix = np.stack([c.embedding for _, c in pairs])
        if matrix.shape[1] != query.size:
            raise ValidationError(
                f"query vector has {query.size} dimensions but the store holds {matrix.shape[1]}",
                code="embedding_dimension_mismatch",
            )
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
        scores = np.clip((matrix @ query) / np.where(norms == 0, 1.0, norms), -1.0, 1.0)
        scored = [(float(score), stored, chunk) for score, (stored, chunk) in zip(scores, pairs, strict=True)]
        return _top(scored, k)

    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        terms = set(tokenize(query))
        if k <= 0 or not terms:
            return []
        docs = [
            (stored, chunk, tokens)
            for stored in self._candidates(bank_ids, filters)
            for chunk, tokens in zip(stored.record.chunks, stored.chunk_tokens, strict=True)
        ]
        if not docs:
            return []
        avg_len = sum(sum(t.values()) for _, _, t in docs) / len(docs) or 1.0
        idf = {term: _idf(len(docs), sum(1 for _, _, t in docs if term in t)) for term in terms}
        scored = []
        for stored, chunk, tokens in docs:
            score = _bm25(tokens, idf, avg_len)
            if score > 0:
                scored.append((score, stored, chunk))
        # A chunk whose text is the query comes first, scored as the best BM25 hit.
        key = text_key(query)
        exact = [item for item in scored if text_key(item[2].text) == key]
        if exact:
            top = max(score for score, _, _ in scored)
            rest = [item for item in scored if text_key(item[2].text) != key]
            return (
                _top([(top, stored, chunk) for _, stored, chunk in exact], k)
                + _top(rest, k)[: max(0, k - len(exact))]
            )
        return _top(scored, k)

    async def count(self, bank_ids: Sequence[str], filters: SearchFilters) -> int:
        return len(self._candidates(bank_ids, filters))

    # -- state and leases ------------------------------------------------------------------------

    async def get_state(self, namespace: str, key: str) -> str | None:
        return self._state.get((namespace, key))

    async def set_state(self, namespace: str, key: str, value: str) -> None:
        self._state[(namespace, key)] = value

    async def try_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        async with self._lock:
            now = time.monotonic()
            current = self._leases.get(name)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            self._leases[name] = (holder, now + ttl_seconds)
            return True

    async def release_lease(self, name: str, holder: str) -> bool:
        async with self._lock:
            current = self._leases.get(name)
            if current is None or current[0] != holder:
                return False
            del self._leases[name]
            return current[1] > time.monotonic()

    async def health(self) -> ComponentHealth:
        memories = sum(len(b.memories) for b in self._banks.values())
        return ComponentHealth(
            name="store", healthy=True, detail=f"memory: {memories} memories in {len(self._banks)} banks"
        )


def _selected(record: MemoryRecord, selector: ForgetSelector) -> bool:
    if selector.all_:
        return True
    if selector.memory_ids and record.memory_id not in selector.memory_ids:
        return False
    if selector.tags and not set(selector.tags).issubset(record.tags):
        return False
    return selector.before is None or as_aware(record.retained_at) < as_aware(selector.before)


def _idf(total: int, containing: int) -> float:
    return math.log(1.0 + (total - containing + 0.5) / (containing + 0.5))


def _bm25(tokens: Counter[str], idf: Mapping[str, float], avg_len: float) -> float:
    length = sum(tokens.values())
    score = 0.0
    for term, weight in idf.items():
        freq = tokens.get(term, 0)
        if freq:
            norm = _BM25_K1 * (1.0 - _BM25_B + _BM25_B * length / avg_len)
            score += weight * freq * (_BM25_K1 + 1.0) / (freq + norm)
    return score


def _top(scored: list[tuple[float, _Stored, Any]], k: int) -> list[StoredHit]:
    # Ties break on ids so results are deterministic.
    scored.sort(key=lambda item: (-item[0], item[1].record.memory_id, item[2].index))
    return [_hit(score, stored, chunk) for score, stored, chunk in scored[:k]]


def _hit(score: float, stored: _Stored, chunk: Any) -> StoredHit:
    record = stored.record
    return StoredHit(
        memory_id=record.memory_id,
        bank_id=record.bank_id,
        chunk_index=chunk.index,
        text=chunk.text,
        score=score,
        tags=record.tags,
        metadata=copy.deepcopy(record.metadata),
        occurred_at=record.occurred_at,
        retained_at=record.retained_at,
        source=record.source,
    )
