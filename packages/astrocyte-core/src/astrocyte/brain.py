"""The engine: ``Astrocyte`` ties the store, the embedder, the LLM and the policy together.

Every operation is a short pipeline of named stages:

* retain: validate -> authorize -> size limits -> PII barrier -> chunk -> rate limit -> embed (once per
  batch) -> insert (once per batch). Everything that can reject an item runs before the store call,
  so nothing partial is ever written.
* recall: validate -> authorize each bank -> banks exist -> rate limit -> embed the query ->
  vector and keyword search concurrently -> reciprocal rank fusion -> ``max_results`` and
  ``max_tokens`` -> authority labels.
* reflect: recall -> LLM over a tier-ordered prompt, or an extractive answer without an LLM.

Recall semantics worth knowing:

* ``MemoryHit.text`` is the memory's best-matching chunk (the whole memory when it is one chunk).
* ``score`` is the fused RRF score divided by the best possible one (first in both arms), so 1.0
  means "top of both the semantic and the keyword ranking", on any store and embedder.
* ``total_available`` is the number of distinct memories either arm found (each arm fetches at
  least ``recall.candidate_pool`` chunks, 30 by default), not a full count of the banks: counting
  every match on each call would cost more than the search itself.
* Vector hits with cosine similarity at or below ``recall.min_similarity`` (0 by default) are
  dropped before fusion, so a memory sharing nothing with the query is not returned.
* ``truncated`` is true when the token budget dropped a hit that ``max_results`` would have kept.
* Reading a bank that does not exist raises ``NotFoundError(code="bank_not_found")``. Banks seen to
  exist are remembered per process; after another replica deletes a bank, this one answers an empty
  result for it instead of 404 until it restarts or deletes the bank itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from astrocyte import validation as check
from astrocyte._metrics import instrumented
from astrocyte.chunking import chunk_text
from astrocyte.config import AstrocyteConfig, load_config, parse_config
from astrocyte.errors import AstrocyteError, NotFoundError, ProviderUnavailableError, ValidationError
from astrocyte.fusion import above, exact_matches, max_fused_score, reciprocal_rank_fusion
from astrocyte.policy.access import bank_not_found
from astrocyte.policy.engine import PolicyEngine
from astrocyte.providers import EMBEDDERS, LLM, LLMS, STORES, Embedder, Store, build, store_method
from astrocyte.reflect import NO_MEMORIES_ANSWER, build_prompt, confidence, extractive_answer, order_hits
from astrocyte.tokens import fit_budget
from astrocyte.types import (
    AstrocyteContext,
    BankInfo,
    BankStats,
    Chunk,
    ComponentHealth,
    ForgetResult,
    HealthReport,
    InsertOutcome,
    MemoryHit,
    MemoryRecord,
    RecallResult,
    ReflectResult,
    RetainRequest,
    RetainResult,
    SearchFilters,
    StoredHit,
)

__all__ = ["Astrocyte"]

logger = logging.getLogger("astrocyte.brain")

_KNOWN_BANKS_LIMIT = 100_000  # bank-exists cache size; cleared when full (it only saves a lookup)
# How long a bank seen to exist is believed to: another replica may delete it meanwhile, and reads
# of a deleted bank must turn into bank_not_found within this time, not at the next restart.
_KNOWN_BANKS_SECONDS = 2.0


@dataclass(slots=True)
class _Prepared:
    """A retain request that passed every check, ready to embed; ``position`` in its batch."""

    position: int
    request: RetainRequest
    text: str
    chunks: list[str]
    source: str | None
    metadata: Mapping[str, Any]  # after the PII barrier, like ``text`` and ``tags``
    tags: tuple[str, ...]


class Astrocyte:
    """Long-term memory for agents: ``retain``, ``recall``, ``reflect``, ``forget`` over banks.

    Build it with :meth:`from_config` or :meth:`from_dict` and use it as an async context manager.
    ``store``, ``embedder`` and ``llm`` may be passed in to use already-built providers.
    """

    def __init__(
        self,
        config: AstrocyteConfig,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        llm: LLM | None = None,
    ):
        self.config = config
        self.store: Store = store if store is not None else build(STORES, config.store, config.store_config)
        self.embedder: Embedder = (
            embedder if embedder is not None else build(EMBEDDERS, config.embedder, config.embedder_config)
        )
        self.llm: LLM | None = llm if llm is not None else _build_llm(config)
        self.policy = PolicyEngine.from_config(config.policy)
        self._known_banks: dict[str, float] = {}  # bank id -> monotonic time its entry expires
        self._started = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> Astrocyte:
        """Build from a YAML file (``${ENV}`` substituted); raises ``ConfigError``."""
        return cls(load_config(path))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> Astrocyte:
        """Build from a mapping shaped like ``astrocyte.yaml``; raises ``ConfigError``."""
        return cls(parse_config(mapping))

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and the policy engine (limits backend). Idempotent."""
        if self._started:
            return
        await self.store.open()
        try:
            await self.policy.open()
        except BaseException:
            await self.store.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Close every provider; an error in one does not keep the others open."""
        self._started = False
        for name, closer in (
            ("policy", self.policy.close),
            ("llm", self.llm.close if self.llm else None),
            ("embedder", self.embedder.close),
            ("store", self.store.close),
        ):
            if closer is None:
                continue
            try:
                await closer()
            except Exception:
                logger.exception("closing the %s failed", name)

    async def __aenter__(self) -> Astrocyte:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- retain -----------------------------------------------------------------------------------

    @instrumented("retain")
    async def retain(
        self,
        content: str,
        bank_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        occurred_at: datetime | None = None,
        source: str | None = None,
        idempotency_key: str | None = None,
        memory_key: str | None = None,
        context: AstrocyteContext | None = None,
    ) -> RetainResult:
        """Store one memory. The same ``idempotency_key`` in the same bank returns the first memory's
        id with ``deduplicated=True`` and writes nothing. With ``memory_key`` (the stable name of an
        external object, e.g. an issue) a new version replaces the bank's memory for that key (same
        memory id, re-embedded) instead of adding a copy."""
        request = RetainRequest(
            content=content,
            bank_id=bank_id,
            metadata=metadata if metadata is not None else {},
            tags=check.validate_tags(tags),
            occurred_at=occurred_at,
            source=source,
            idempotency_key=idempotency_key,
            memory_key=memory_key,
        )
        (outcome,) = await self._retain_batch([request], context)
        if isinstance(outcome, AstrocyteError):
            raise outcome
        return outcome

    @instrumented("retain_many")
    async def retain_many(
        self, requests: Sequence[RetainRequest], *, context: AstrocyteContext | None = None
    ) -> list[RetainResult | AstrocyteError]:
        """Store a batch with one embedder call and one store insert. Each item gets its own outcome:
        a result, or the error that rejected it (a failure of the embedder or store fails every
        item that reached it, with the same error). Never raises for a bad item."""
        return await self._retain_batch(list(requests), context)

    async def _retain_batch(
        self, requests: list[RetainRequest], context: AstrocyteContext | None
    ) -> list[RetainResult | AstrocyteError]:
        outcomes: list[RetainResult | AstrocyteError | None] = [None] * len(requests)
        ready: list[_Prepared] = []
        writable: set[str] = set()  # banks of this batch already validated and authorized
        for position, request in enumerate(requests):
            try:
                ready.append(self._prepare(request, context, writable, position))
            except AstrocyteError as exc:
                outcomes[position] = exc
        ready = await self._charge_retains(ready, context, outcomes)
        if ready:
            written: list[RetainResult | AstrocyteError]
            try:
                ready = await self._skip_stored_keys(ready, outcomes)
                written = list(await self._write(ready)) if ready else []
            except AstrocyteError as exc:
                written = [exc] * len(ready)
            for item, outcome in zip(ready, written, strict=True):
                outcomes[item.position] = outcome
        return outcomes  # type: ignore[return-value]  # every slot is filled above

    async def _skip_stored_keys(
        self, ready: list[_Prepared], outcomes: list[RetainResult | AstrocyteError | None]
    ) -> list[_Prepared]:
        """Answer retries of idempotency keys the store already holds without embedding them again,
        when embedding costs a remote call (an embedder without ``remote = False``) and the store
        can look keys up (``find_keys``). The insert still deduplicates whatever races past this."""
        find_keys = getattr(self.store, "find_keys", None)
        if find_keys is None or not getattr(self.embedder, "remote", True):
            return ready
        keyed = [(item.request.bank_id, key) for item in ready if (key := item.request.idempotency_key)]
        stored: dict[tuple[str, str], str] = await find_keys(keyed) if keyed else {}
        if not stored:
            return ready
        fresh = []
        for item in ready:
            key = item.request.idempotency_key
            memory_id = stored.get((item.request.bank_id, key)) if key is not None else None
            if memory_id is None:
                fresh.append(item)
            else:
                outcomes[item.position] = RetainResult(stored=True, memory_id=memory_id, deduplicated=True)
        return fresh

    def _prepare(
        self,
        request: RetainRequest,
        context: AstrocyteContext | None,
        writable: set[str],
        position: int,
    ) -> _Prepared:
        """Every check that can reject one retain, in order; raises the first problem found.
        ``writable``: banks that passed the bank checks for this context (skipped, then added to)."""
        bank_id = request.bank_id
        if bank_id not in writable:
            bank_id = check.validate_bank_id(bank_id)
            self.policy.authorize(context, bank_id, "write")
            writable.add(bank_id)
        content = check.validate_content(request.content)
        tags = check.validate_tags(request.tags)
        check.validate_retain_fields(request)
        if request.memory_key is not None:
            _check_memory_key(request.memory_key)
            store_method(self.store, "upsert_keyed", "memory_keys_not_supported", "a retain with memory_key")
        if request.source is not None:
            self.policy.check_source(context, request.source)
        self.policy.check_sizes(content, request.metadata, tags)
        text = self.policy.screen(content)
        metadata, tags = self.policy.screen_fields(request.metadata, tags)
        chunking = self.config.chunking
        chunks = chunk_text(text, chunking.max_chars, chunking.overlap_chars)
        if not chunks:  # the barrier redacted everything away
            raise ValidationError("content is empty after redaction", code="content_empty")
        source = request.source if request.source is not None else (context.source if context else None)
        return _Prepared(position, request, text, chunks, source, metadata, tags)

    async def _charge_retains(
        self,
        ready: list[_Prepared],
        context: AstrocyteContext | None,
        outcomes: list[RetainResult | AstrocyteError | None],
    ) -> list[_Prepared]:
        """Rate limits, charged per bank for the whole batch; a refused bank fails its items."""
        per_bank: dict[str, int] = {}
        for item in ready:
            per_bank[item.request.bank_id] = per_bank.get(item.request.bank_id, 0) + 1
        refused: dict[str, AstrocyteError] = {}
        for bank_id, count in per_bank.items():
            try:
                await self.policy.acquire(context, bank_id, "retain", cost=count)
            except AstrocyteError as exc:
                refused[bank_id] = exc
        if not refused:
            return ready
        kept = []
        for item in ready:
            error = refused.get(item.request.bank_id)
            if error is None:
                kept.append(item)
            else:
                outcomes[item.position] = error
        return kept

    async def _write(self, items: list[_Prepared]) -> list[RetainResult]:
        """Embed every chunk of the batch in one call, then insert every record in one call."""
        texts = [chunk for item in items for chunk in item.chunks]
        vectors = list(await self._embed(texts))  # one row view per chunk, made in C
        now = datetime.now(UTC)
        records = []
        row = 0
        for item, memory_id in zip(items, _new_memory_ids(len(items)), strict=True):
            if len(item.chunks) == 1:  # the common case: no generator, no enumerate
                chunks: tuple[Chunk, ...] = (Chunk(0, item.chunks[0], vectors[row]),)
            else:
                chunks = tuple(Chunk(i, text, vectors[row + i]) for i, text in enumerate(item.chunks))
            row += len(chunks)
            records.append(_record(item, chunks, now, memory_id))
        inserted = await self._insert(records)
        self._remember_banks(record.bank_id for record in records)
        return [
            RetainResult(stored=True, memory_id=o.memory_id, deduplicated=o.deduplicated) for o in inserted
        ]

    async def _insert(self, records: list[MemoryRecord]) -> list[InsertOutcome]:
        """Plain records through ``insert``, keyed ones (``memory_key``) through ``upsert_keyed``;
        outcomes in the records' order."""
        keyed = [i for i, record in enumerate(records) if record.memory_key is not None]
        if not keyed:
            return list(await self.store.insert(records))
        plain = [i for i, record in enumerate(records) if record.memory_key is None]
        upsert = store_method(
            self.store, "upsert_keyed", "memory_keys_not_supported", "a retain with memory_key"
        )
        outcomes: list[InsertOutcome | None] = [None] * len(records)
        for indices, answered in (
            (keyed, await upsert([records[i] for i in keyed])),
            (plain, await self.store.insert([records[i] for i in plain]) if plain else []),
        ):
            for index, outcome in zip(indices, answered, strict=True):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]  # every slot is filled above

    async def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = await self.embedder.embed(texts)
        expected = (len(texts), self.embedder.dimensions)
        if getattr(vectors, "shape", None) != expected:
            got = getattr(vectors, "shape", type(vectors).__name__)
            raise ValidationError(
                f"the embedder returned {got} for {len(texts)} texts of {self.embedder.dimensions} dimensions",
                code="embedding_dimension_mismatch",
            )
        return vectors

    # -- recall -----------------------------------------------------------------------------------

    @instrumented("recall")
    async def recall(
        self,
        query: str,
        bank_id: str | None = None,
        *,
        banks: Sequence[str] | None = None,
        max_results: int = 10,
        max_tokens: int | None = None,
        tags: Sequence[str] | None = None,
        time_range: tuple[datetime | None, datetime | None] | None = None,
        context: AstrocyteContext | None = None,
    ) -> RecallResult:
        """The memories most relevant to ``query`` across ``bank_id`` and/or ``banks``, best first."""
        start, end = check.validate_time_range(time_range)
        filters = SearchFilters(tags=check.validate_tags(tags), start=start, end=end)
        limit = check.validate_max_results(max_results, self.config.recall.max_results_limit)
        budget = check.validate_max_tokens(max_tokens)
        bank_ids = await self._open_for_read(query, bank_id, banks, context, "recall")
        return await self._search(query, bank_ids, filters, limit, budget)

    async def _open_for_read(
        self,
        query: str,
        bank_id: str | None,
        banks: Sequence[str] | None,
        context: AstrocyteContext | None,
        operation: str,
    ) -> list[str]:
        """Validate the query and banks, authorize reading each, check they exist, charge limits."""
        check.validate_query(query)
        bank_ids = check.validate_bank_ids(bank_id, banks)
        for bank in bank_ids:
            self.policy.authorize(context, bank, "read")
        await self._require_banks(bank_ids)
        for bank in bank_ids:
            await self.policy.acquire(context, bank, operation)
        return bank_ids

    async def _search(
        self,
        query: str,
        bank_ids: list[str],
        filters: SearchFilters,
        max_results: int,
        max_tokens: int | None,
    ) -> RecallResult:
        started = time.perf_counter()
        settings = self.config.recall
        vector = (await self._embed([query]))[0]
        embedded = time.perf_counter()
        k = max(settings.candidate_pool, max_results * settings.candidate_multiplier)
        by_vector, by_keyword = await self._both_arms(bank_ids, vector, query, k, filters)
        searched = time.perf_counter()
        if settings.min_similarity is not None:
            by_vector = above(by_vector, settings.min_similarity)
        exact = exact_matches(query, by_vector, by_keyword)
        fused = reciprocal_rank_fusion([by_vector, by_keyword], k=settings.rrf_k, first=exact)
        best = max_fused_score(2, settings.rrf_k)
        hits, truncated = fit_budget(
            [self._hit(f.hit, f.score / best) for f in fused[:max_results]], max_tokens
        )
        done = time.perf_counter()
        trace = {
            "banks": bank_ids,
            "candidates_per_arm": k,
            "vector_hits": len(by_vector),
            "keyword_hits": len(by_keyword),
            "fused_memories": len(fused),
            "exact_matches": len(exact),
            "timings_ms": {
                "embed": _ms(started, embedded),
                "search": _ms(embedded, searched),
                "fuse": _ms(searched, done),
                "total": _ms(started, done),
            },
        }
        return RecallResult(
            hits=hits,
            total_available=len(fused),
            truncated=truncated,
            trace=trace,
            authority_context=self.policy.authority_context(hits) if hits else None,
        )

    async def _both_arms(
        self, bank_ids: list[str], vector: np.ndarray, query: str, k: int, filters: SearchFilters
    ) -> tuple[Sequence[StoredHit], Sequence[StoredHit]]:
        """The vector and keyword arms; in one call when the store offers ``hybrid_search`` (one
        worker-thread hop instead of two, hits read only when used), else concurrently."""
        hybrid = getattr(self.store, "hybrid_search", None)
        if hybrid is not None:
            arms: tuple[Sequence[StoredHit], Sequence[StoredHit]] = await hybrid(
                bank_ids, vector, query, k, filters
            )
            return arms
        by_vector, by_keyword = await asyncio.gather(
            self.store.vector_search(bank_ids, vector, k, filters),
            self.store.keyword_search(bank_ids, query, k, filters),
        )
        return by_vector, by_keyword

    def _hit(self, hit: StoredHit, score: float) -> MemoryHit:
        return MemoryHit(
            memory_id=hit.memory_id,
            bank_id=hit.bank_id,
            text=hit.text,
            score=round(min(1.0, score), 6),
            tags=list(hit.tags),
            metadata=dict(hit.metadata),
            occurred_at=hit.occurred_at,
            retained_at=hit.retained_at,
            source=hit.source,
            authority_tier=self.policy.authority_tier(hit.bank_id, hit.source),
        )

    # -- reflect ----------------------------------------------------------------------------------

    @instrumented("reflect")
    async def reflect(
        self,
        query: str,
        bank_id: str | None = None,
        *,
        banks: Sequence[str] | None = None,
        max_tokens: int | None = None,
        include_sources: bool = True,
        context: AstrocyteContext | None = None,
    ) -> ReflectResult:
        """An answer to ``query`` from the banks' memories: by the LLM when one is configured (falling
        back to an extractive answer if it is unavailable), else extractive. ``max_tokens`` bounds
        the answer."""
        answer_tokens = check.validate_max_tokens(max_tokens) or self.config.reflect.answer_tokens
        bank_ids = await self._open_for_read(query, bank_id, banks, context, "reflect")
        settings = self.config.reflect
        recalled = await self._search(
            query, bank_ids, SearchFilters(), settings.max_memories, settings.context_tokens
        )
        hits = order_hits(recalled.hits, self.policy.tier_rank)
        if not hits:
            answer = NO_MEMORIES_ANSWER
        else:
            answer = await self._answer(query, hits, recalled.authority_context, answer_tokens)
        return ReflectResult(
            answer=answer, confidence=confidence(hits), sources=hits if include_sources else []
        )

    async def _answer(
        self, query: str, hits: list[MemoryHit], authority_context: str | None, max_tokens: int
    ) -> str:
        if self.llm is not None:
            system, user = build_prompt(query, hits, authority_context)
            try:
                return await self.llm.complete(system, user, max_tokens=max_tokens)
            except ProviderUnavailableError as exc:
                # Reflect stays useful when the model is down; the outage shows in health and logs.
                logger.warning("reflect: LLM unavailable (%s); answering extractively", exc.code)
        return extractive_answer(query, hits, max_tokens)

    # -- forget -----------------------------------------------------------------------------------

    @instrumented("forget")
    async def forget(
        self,
        bank_id: str,
        *,
        memory_ids: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        before: datetime | None = None,
        scope: Literal["all"] | None = None,
        memory_keys: Sequence[str] | None = None,
        context: AstrocyteContext | None = None,
    ) -> ForgetResult:
        """Delete memories matching every given selector; ``scope="all"`` (alone) clears the bank.
        ``memory_keys`` (alone) deletes the memories retained under those keys."""
        bank_id = check.validate_bank_id(bank_id)
        self.policy.authorize(context, bank_id, "forget")
        if memory_keys is not None:
            return await self._forget_keys(bank_id, memory_keys, (memory_ids, tags, before, scope), context)
        selector = check.forget_selector(memory_ids, tags, before, scope)
        await self._require_banks([bank_id])
        await self.policy.acquire(context, bank_id, "forget")
        return ForgetResult(deleted_count=await self.store.forget(bank_id, selector))

    async def _forget_keys(
        self,
        bank_id: str,
        memory_keys: Sequence[str],
        others: tuple[Any, ...],
        context: AstrocyteContext | None,
    ) -> ForgetResult:
        if any(other is not None for other in others):
            raise ValidationError(
                "memory_keys cannot be combined with other forget selectors", code="forget_selector_conflict"
            )
        if isinstance(memory_keys, str) or not memory_keys:
            raise ValidationError("memory_keys must be a non-empty list of keys", code="memory_keys_invalid")
        for key in memory_keys:
            _check_memory_key(key)
        forget_keys = store_method(
            self.store, "forget_keys", "memory_keys_not_supported", "forget by memory_keys"
        )
        await self._require_banks([bank_id])
        await self.policy.acquire(context, bank_id, "forget")
        return ForgetResult(deleted_count=await forget_keys(bank_id, list(memory_keys)))

    # -- banks ------------------------------------------------------------------------------------

    @instrumented("create_bank")
    async def create_bank(self, bank_id: str, *, context: AstrocyteContext | None = None) -> BankInfo:
        """Create an empty bank (a no-op when it exists); needs write permission on it."""
        bank_id = check.validate_bank_id(bank_id)
        self.policy.authorize(context, bank_id, "write")
        created = await self.store.create_bank(bank_id)
        self._remember_banks([bank_id])
        return BankInfo(bank_id=bank_id, created_at=datetime.now(UTC) if created else None)

    @instrumented("list_banks")
    async def list_banks(self, *, context: AstrocyteContext | None = None) -> list[str]:
        """Every bank the caller may read."""
        return self.policy.readable_banks(context, await self.store.list_banks())

    @instrumented("bank_stats")
    async def bank_stats(self, bank_id: str, *, context: AstrocyteContext | None = None) -> BankStats:
        """Counts and time span of a bank the caller may read."""
        bank_id = check.validate_bank_id(bank_id)
        self.policy.authorize(context, bank_id, "read")
        await self._require_banks([bank_id], cached=False)
        try:
            return await self.store.bank_stats(bank_id)
        except NotFoundError:  # deleted meanwhile; answer exactly as for any absent bank
            raise bank_not_found(bank_id) from None

    @instrumented("delete_bank")
    async def delete_bank(self, bank_id: str, *, context: AstrocyteContext | None = None) -> int:
        """Delete a bank and everything in it; needs admin on it. Returns the memories deleted."""
        bank_id = check.validate_bank_id(bank_id)
        self.policy.authorize(context, bank_id, "admin")
        await self._require_banks([bank_id], cached=False)
        self._known_banks.pop(bank_id, None)
        return await self.store.delete_bank(bank_id)

    async def _require_banks(self, bank_ids: Sequence[str], *, cached: bool = True) -> None:
        now = time.monotonic()
        unknown = [b for b in bank_ids if not (cached and self._known_banks.get(b, 0.0) > now)]
        if not unknown:
            return
        exists = await asyncio.gather(*(self.store.bank_exists(b) for b in unknown))
        for bank, found in zip(unknown, exists, strict=True):
            if not found:
                raise bank_not_found(bank)
        self._remember_banks(unknown)

    def _remember_banks(self, bank_ids: Iterable[str]) -> None:
        if len(self._known_banks) > _KNOWN_BANKS_LIMIT:
            self._known_banks.clear()
        expires = time.monotonic() + _KNOWN_BANKS_SECONDS
        self._known_banks.update(dict.fromkeys(bank_ids, expires))

    # -- health -----------------------------------------------------------------------------------

    @instrumented("health")
    async def health(self) -> HealthReport:
        """The store, the embedder and the LLM (when configured), each checked concurrently."""
        checks = [("store", self.store.health), ("embedder", self.embedder.health)]
        if self.llm is not None:
            checks.append(("llm", self.llm.health))
        components = list(await asyncio.gather(*(_probe(name, probe) for name, probe in checks)))
        return HealthReport(healthy=all(c.healthy for c in components), components=components)


# -- stage helpers ----------------------------------------------------------------------------------


def _new_memory_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as 32 hex digits, exactly like ``uuid.uuid4().hex``, from
    one ``os.urandom`` call for the whole batch instead of one per memory (each call is a syscall,
    and a chance for another thread to take the GIL from the event loop)."""
    raw = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = raw.tobytes().hex()
    return [digits[start : start + 32] for start in range(0, 32 * count, 32)]


_MEMORY_KEY_MAX = 512


def _check_memory_key(key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > _MEMORY_KEY_MAX:
        raise ValidationError(
            f"memory_key must be a string of 1-{_MEMORY_KEY_MAX} characters", code="memory_key_invalid"
        )


def _record(item: _Prepared, chunks: tuple[Chunk, ...], now: datetime, memory_id: str) -> MemoryRecord:
    request = item.request
    return MemoryRecord(
        memory_id=memory_id,
        bank_id=request.bank_id,
        text=item.text,
        chunks=chunks,
        tags=item.tags,
        metadata=dict(item.metadata),
        occurred_at=request.occurred_at,
        retained_at=now,
        source=item.source,
        idempotency_key=request.idempotency_key,
        memory_key=request.memory_key,
    )


def _build_llm(config: AstrocyteConfig) -> LLM | None:
    return build(LLMS, config.llm, config.llm_config) if config.llm else None


async def _probe(name: str, probe: Any) -> ComponentHealth:
    started = time.perf_counter()
    try:
        report: ComponentHealth = await probe()
    except Exception as exc:  # a health check must report, never raise
        return ComponentHealth(name=name, healthy=False, detail=f"health check failed: {type(exc).__name__}")
    if report.latency_ms is None:
        report.latency_ms = _ms(started, time.perf_counter())
    return report


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)
