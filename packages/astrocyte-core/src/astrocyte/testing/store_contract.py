"""The store contract kit: prove that a :class:`~astrocyte.providers.Store` behaves like every other.

Use it from a test module by subclassing :class:`StoreContract` and overriding its ``store``
fixture to yield an opened store (closed afterwards)::

    import pytest
    from astrocyte.testing.store_contract import StoreContract
    from mypkg.stores import MyStore

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore({"path": str(tmp_path / "db")})
            await store.open()
            yield store
            await store.close()

Every ``test_*`` method is one behaviour, named after it; :func:`contract_checks` lists them, and
each can be awaited directly (``await StoreContract().test_x(store)``) outside pytest's collection.
The kit needs ``pytest`` and ``pytest-asyncio`` when the tests run; the class carries the
``asyncio`` mark, so under ``asyncio_mode = "strict"`` only the fixture needs
``@pytest_asyncio.fixture``.

**Shared backends are fine.** The fixture may hand out stores that share state (one database or
schema for the whole run): each check works only in banks it names with a random suffix
(:func:`~astrocyte.testing._helpers.unique_bank`) and never assumes the store is empty. Every
vector written has :data:`CONTRACT_DIMENSIONS` components, so a shared store's recorded dimension
stays valid; only the mismatch check sends a longer vector, and it must be refused.

**Discovery hook.** The core's ``contracts`` session runs this kit against *every* class installed
in the ``astrocyte.stores`` entry-point group, third-party ones included. A store takes part by
defining two classmethods:

``contract_config(tmp_path: pathlib.Path) -> Mapping | None`` (required)
    The ``store_config`` mapping for a throw-away test instance; ``tmp_path`` is a fresh directory
    for files. Return ``None`` when the store needs a service that is not configured (for example
    an unset DSN environment variable): the tests then skip locally and fail when ``CI`` is set.
    It is called once per test session and may be ``async``.

``contract_cleanup(config: Mapping) -> None`` (optional, may be ``async``)
    Called once after the session with the mapping ``contract_config`` returned, to drop what the
    run created (for example a per-run PostgreSQL schema).

:func:`contract_config_for` and :func:`contract_cleanup_for` resolve these hooks, for a third-party
repository that wants its own discovery suite.

Behaviour the kit pins down beyond the protocol's docstrings:

- ``StoredHit.text`` is the text of the chunk that matched (not the whole memory).
- ``bank_stats`` of an absent bank raises ``NotFoundError``; ``delete_bank`` and ``forget`` of an
  absent bank return 0; searching or counting absent banks yields nothing.
- ``forget`` with an empty selector raises ``ValidationError`` (it never means "everything"), and
  so does ``all_`` combined with another selector.
- Forgetting a memory frees its idempotency key; so does deleting its bank.
- A refused insert (dimension mismatch, or a value the backend cannot hold, which must surface as
  ``ValidationError``) leaves no trace: no memories, no bank, no taken keys.
- ``keyword_search`` takes plain text: any word of the query may match (a question finds a memory
  sharing one word with it) and no input string makes it raise. A chunk whose text is the query
  word for word (:func:`astrocyte.fusion.text_key`) ranks first, whatever its BM25 rank: the
  engine keeps such an exact match on top of the fused results.
- Vector scores are cosine similarities in ``[-1, 1]``, never NaN; a query of the wrong size
  raises ``ValidationError(code="embedding_dimension_mismatch")``.
- Bank ids and tags are compared exactly (case-sensitive, no wildcard meaning for ``%`` or ``_``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astrocyte.errors import NotFoundError, ValidationError
from astrocyte.providers import Store
from astrocyte.testing._helpers import (
    CONTRACT_DIMENSIONS,
    T0,
    angled_vector,
    at,
    make_record,
    missing_service,
    unique_bank,
    unit_vector,
)
from astrocyte.types import (
    ComponentHealth,
    ForgetSelector,
    InsertOutcome,
    MemoryRecord,
    SearchFilters,
    StoredHit,
)

__all__ = [
    "CONTRACT_DIMENSIONS",
    "HOSTILE_QUERIES",
    "StoreContract",
    "T0",
    "angled_vector",
    "at",
    "contract_checks",
    "contract_cleanup_for",
    "contract_config_for",
    "make_record",
    "missing_service",
    "unique_bank",
    "unit_vector",
]

NO_FILTERS = SearchFilters()
SCORE_TOLERANCE = 1e-3

HOSTILE_QUERIES: tuple[str, ...] = (
    "",
    "   ",
    '"',
    "'",
    '"unterminated phrase',
    "*",
    "zebra*",
    "NEAR(a b)",
    "a AND",
    "OR",
    "NOT",
    "AND OR NOT",
    "-",
    "--",
    "col:value",
    "^start",
    "()",
    "(((",
    "{}[]",
    "'); DROP TABLE memories; --",
    "%_%",
    "\\",
    "\\x00",
    "\x00",
    "a\x00b",
    "!&|<->:*",
    "'a' & 'b'",
    "\u202e\u200b\ufeff",
    "🦓 emoji",
    "x" * 5000,
    " ".join(["word"] * 500),
)
"""Query strings that break naive full-text query builders. ``keyword_search`` must accept each."""


def _keyed(bank: str, text: str, idempotency_key: str, memory_key: str) -> MemoryRecord:
    """A record carrying a memory key (one version of an external object)."""
    return dataclasses.replace(
        make_record(bank, text, idempotency_key=idempotency_key), memory_key=memory_key
    )


def _optional(store: Store, name: str) -> Any:
    """An optional Store method; the check skips (never fails) for a store without it."""
    method = getattr(store, name, None)
    if not callable(method):
        pytest.skip(f"{type(store).__name__} has no optional method {name}()")
    return method


def contract_checks() -> list[str]:
    """Names of every check in the kit (the ``test_*`` methods of :class:`StoreContract`)."""
    return sorted(name for name in dir(StoreContract) if name.startswith("test_"))


async def contract_config_for(cls: type[Any], tmp_path: Path) -> Mapping[str, Any]:
    """The test ``store_config`` a store class supplies through its ``contract_config`` hook.

    Fails the test when the class has no hook; skips it (fails under ``CI``) when the hook answers
    ``None`` because a service it needs is not configured.
    """
    hook = getattr(cls, "contract_config", None)
    if not callable(hook):
        pytest.fail(
            f"{cls.__module__}.{cls.__qualname__} has no `contract_config(tmp_path)` classmethod, so the "
            "store contract kit cannot test it; see astrocyte.testing.store_contract"
        )
    config = hook(tmp_path)
    if inspect.isawaitable(config):
        config = await config
    if config is None:
        missing_service(f"{cls.__qualname__}.contract_config found no configured service to test against")
    return dict(config)


async def contract_cleanup_for(cls: type[Any], config: Mapping[str, Any]) -> None:
    """Run the class's optional ``contract_cleanup(config)`` hook (sync or async)."""
    cleanup = getattr(cls, "contract_cleanup", None)
    if callable(cleanup):
        result = cleanup(config)
        if inspect.isawaitable(result):
            await result


def _texts(hits: Sequence[StoredHit]) -> set[str]:
    return {hit.text for hit in hits}


def _ids(hits: Sequence[StoredHit]) -> set[str]:
    return {hit.memory_id for hit in hits}


def _assert_best_first(hits: Sequence[StoredHit], arm: str) -> None:
    scores = [hit.score for hit in hits]
    assert all(a >= b - 1e-9 for a, b in zip(scores, scores[1:], strict=False)), (
        f"{arm} hits are not ordered best first: scores {scores}"
    )


async def _search_both(
    store: Store, banks: Sequence[str], word: str, vector: np.ndarray, filters: SearchFilters, k: int = 50
) -> tuple[list[StoredHit], list[StoredHit]]:
    vector_hits = await store.vector_search(banks, vector, k, filters)
    keyword_hits = await store.keyword_search(banks, word, k, filters)
    return vector_hits, keyword_hits


async def _insert_one(store: Store, record: MemoryRecord) -> str:
    (outcome,) = await store.insert([record])
    return outcome.memory_id


class StoreContract:
    """Behaviour every store must show. Subclass it and override :meth:`store`."""

    # Lets the checks run under pytest-asyncio's strict mode too (the fixture must then be
    # declared with ``pytest_asyncio.fixture``).
    pytestmark = [pytest.mark.asyncio]

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        """Override: yield an opened store and close it afterwards."""
        pytest.fail("override the `store` fixture in your StoreContract subclass")
        yield  # pragma: no cover - unreachable, keeps this an async generator fixture

    # -- banks -----------------------------------------------------------------------------------

    async def test_create_bank_reports_whether_it_created_the_bank(self, store: Store) -> None:
        bank = unique_bank("create")
        assert await store.bank_exists(bank) is False
        assert await store.create_bank(bank) is True
        assert await store.create_bank(bank) is False
        assert await store.bank_exists(bank) is True
        assert bank in await store.list_banks()

    async def test_insert_creates_an_absent_bank(self, store: Store) -> None:
        bank = unique_bank("implicit")
        await store.insert([make_record(bank, "created by insert")])
        assert await store.bank_exists(bank)
        assert bank in await store.list_banks()
        assert await store.create_bank(bank) is False

    async def test_delete_bank_removes_its_memories_and_only_them(self, store: Store) -> None:
        doomed, kept = unique_bank("doomed"), unique_bank("kept")
        await store.insert([make_record(doomed, f"quokka {i}") for i in range(2)])
        await store.insert([make_record(doomed, "", chunks=["quokka a", "quokka b"])])
        await store.insert([make_record(kept, "quokka survivor")])
        assert await store.delete_bank(doomed) == 3
        assert await store.bank_exists(doomed) is False
        assert doomed not in await store.list_banks()
        assert await store.count([doomed], NO_FILTERS) == 0
        assert await store.keyword_search([doomed, kept], "quokka", 10, NO_FILTERS) != []
        assert _ids(await store.keyword_search([doomed], "quokka", 10, NO_FILTERS)) == set()
        assert await store.count([kept], NO_FILTERS) == 1

    async def test_delete_bank_of_absent_bank_returns_zero(self, store: Store) -> None:
        assert await store.delete_bank(unique_bank("never")) == 0

    async def test_delete_bank_frees_idempotency_keys(self, store: Store) -> None:
        bank = unique_bank("rekey")
        await store.insert([make_record(bank, "first life", idempotency_key="k")])
        await store.delete_bank(bank)
        (outcome,) = await store.insert([make_record(bank, "second life", idempotency_key="k")])
        assert outcome.deduplicated is False
        assert await store.count([bank], NO_FILTERS) == 1

    async def test_bank_stats_counts_memories_and_chunks(self, store: Store) -> None:
        bank = unique_bank("stats")
        await store.insert(
            [
                make_record(bank, "one", retained_at=at(1)),
                make_record(bank, "", chunks=["two a", "two b", "two c"], retained_at=at(3)),
                make_record(bank, "three", retained_at=at(2)),
            ]
        )
        stats = await store.bank_stats(bank)
        assert (stats.bank_id, stats.memory_count, stats.chunk_count) == (bank, 3, 5)
        assert stats.oldest_retained_at == at(1)
        assert stats.newest_retained_at == at(3)

    async def test_bank_stats_of_empty_bank_is_zero(self, store: Store) -> None:
        bank = unique_bank("empty")
        await store.create_bank(bank)
        stats = await store.bank_stats(bank)
        assert (stats.memory_count, stats.chunk_count) == (0, 0)
        assert stats.oldest_retained_at is None and stats.newest_retained_at is None

    async def test_bank_stats_of_absent_bank_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            await store.bank_stats(unique_bank("absent"))

    # -- insert and idempotency ------------------------------------------------------------------

    async def test_insert_returns_one_outcome_per_record_in_order(self, store: Store) -> None:
        bank = unique_bank("order")
        records = [make_record(bank, f"record {i}") for i in range(5)]
        outcomes = await store.insert(records)
        assert [o.memory_id for o in outcomes] == [r.memory_id for r in records]
        assert not any(o.deduplicated for o in outcomes)

    async def test_same_key_same_bank_is_deduplicated_to_the_original(self, store: Store) -> None:
        bank = unique_bank("dedup")
        first = make_record(bank, "original narwhal", idempotency_key="delivery-1")
        again = make_record(bank, "replayed narwhal", idempotency_key="delivery-1")
        (one,) = await store.insert([first])
        (two,) = await store.insert([again])
        assert (one.memory_id, one.deduplicated) == (first.memory_id, False)
        assert (two.memory_id, two.deduplicated) == (first.memory_id, True)
        assert await store.count([bank], NO_FILTERS) == 1
        hits = await store.keyword_search([bank], "narwhal", 10, NO_FILTERS)
        assert [h.text for h in hits] == ["original narwhal"], "the duplicate must not overwrite"

    async def test_same_key_in_another_bank_is_a_separate_memory(self, store: Store) -> None:
        bank_a, bank_b = unique_bank("key-a"), unique_bank("key-b")
        (a,) = await store.insert([make_record(bank_a, "same key", idempotency_key="shared")])
        (b,) = await store.insert([make_record(bank_b, "same key", idempotency_key="shared")])
        assert not a.deduplicated and not b.deduplicated
        assert a.memory_id != b.memory_id
        assert await store.count([bank_a, bank_b], NO_FILTERS) == 2

    async def test_duplicate_keys_within_one_batch_write_once(self, store: Store) -> None:
        bank = unique_bank("batch")
        records = [
            make_record(bank, "first", idempotency_key="k1"),
            make_record(bank, "second", idempotency_key="k2"),
            make_record(bank, "first again", idempotency_key="k1"),
            make_record(unique_bank("batch-other"), "other bank", idempotency_key="k1"),
        ]
        outcomes = await store.insert(records)
        assert [o.deduplicated for o in outcomes] == [False, False, True, False]
        assert outcomes[2].memory_id == records[0].memory_id
        assert await store.count([bank], NO_FILTERS) == 2

    async def test_records_without_key_are_never_deduplicated(self, store: Store) -> None:
        bank = unique_bank("nokey")
        outcomes = await store.insert([make_record(bank, "twin"), make_record(bank, "twin")])
        outcomes += await store.insert([make_record(bank, "twin")])
        assert not any(o.deduplicated for o in outcomes)
        assert await store.count([bank], NO_FILTERS) == 3

    async def test_concurrent_writers_store_one_memory_per_key(self, store: Store) -> None:
        bank, writers, keys = unique_bank("race"), 20, 50

        async def writer(seed: int) -> list[tuple[str, str, bool]]:
            order = list(range(keys))
            random.Random(seed).shuffle(order)
            seen = []
            for i in order:
                record = make_record(bank, f"writer {seed} key {i}", idempotency_key=f"key-{i}")
                (outcome,) = await store.insert([record])
                seen.append((f"key-{i}", outcome.memory_id, outcome.deduplicated))
            return seen

        results = [row for rows in await asyncio.gather(*(writer(s) for s in range(writers))) for row in rows]
        assert await store.count([bank], NO_FILTERS) == keys
        for key in {k for k, _, _ in results}:
            rows = [(mid, dedup) for k, mid, dedup in results if k == key]
            assert len({mid for mid, _ in rows}) == 1, f"{key} resolved to several memories"
            assert sum(1 for _, dedup in rows if not dedup) == 1, f"{key} was written more than once"

    async def test_concurrent_batches_with_overlapping_keys_store_one_memory_per_key(
        self, store: Store
    ) -> None:
        bank, keys = unique_bank("batchrace"), 40

        async def batch(seed: int) -> list[tuple[str, str]]:
            order = list(range(keys))
            random.Random(seed).shuffle(order)  # different lock orders: a deadlock-prone store fails
            records = [make_record(bank, f"batch {seed} key {i}", idempotency_key=f"key-{i}") for i in order]
            outcomes = await store.insert(records)
            return [(f"key-{i}", o.memory_id) for i, o in zip(order, outcomes, strict=True)]

        rows = [row for rows in await asyncio.gather(*(batch(s) for s in range(8))) for row in rows]
        assert await store.count([bank], NO_FILTERS) == keys
        for key in {k for k, _ in rows}:
            assert len({mid for k, mid in rows if k == key}) == 1, f"{key} resolved to several memories"

    async def test_a_large_batch_is_written_whole(self, store: Store) -> None:
        bank = unique_bank("large")
        records = [make_record(bank, f"bulk item {i}", idempotency_key=f"bulk-{i}") for i in range(1500)]
        outcomes = await store.insert(records)
        assert [o.memory_id for o in outcomes] == [r.memory_id for r in records]
        assert await store.count([bank], NO_FILTERS) == 1500
        assert await store.insert([]) == []

    async def test_dimension_mismatch_writes_nothing(self, store: Store) -> None:
        settled, fresh = unique_bank("dim"), unique_bank("dim-fresh")
        await store.insert([make_record(settled, "sets the dimension")])
        good = make_record(fresh, "good vector", idempotency_key="good")
        bad = make_record(fresh, "bad vector", dim=CONTRACT_DIMENSIONS + 1)
        for batch in ([good, bad], [bad, good]):
            with pytest.raises(ValidationError) as caught:
                await store.insert(batch)
            assert caught.value.code == "embedding_dimension_mismatch"
        assert await store.bank_exists(fresh) is False, "a refused insert must not create the bank"
        assert await store.count([fresh], NO_FILTERS) == 0
        with pytest.raises(ValidationError):
            await store.insert([make_record(settled, "bad in the same bank", dim=CONTRACT_DIMENSIONS - 1)])
        assert await store.count([settled], NO_FILTERS) == 1
        (outcome,) = await store.insert([good])
        assert outcome.deduplicated is False, "the refused batch must not have taken its keys"

    async def test_unencodable_text_is_stored_exactly_or_refused_cleanly(self, store: Store) -> None:
        # JSON lets a client send a NUL or a lone surrogate ("\\ud800"); a store may refuse such a
        # value, but only with ValidationError, writing nothing, and it must keep working.
        bank = unique_bank("awkward")
        awkward = [
            make_record(bank, "nul\x00in text"),
            make_record(bank, "nul in metadata", metadata={"k": "v\x00"}),
            make_record(bank, "nul in tag", tags=["t\x00"]),
            make_record(bank, "lone \ud800 surrogate"),
            make_record(bank, "surrogate in metadata", metadata={"\udfff": "x"}),
        ]
        for record in awkward:
            before = await store.count([bank], NO_FILTERS)
            try:
                await store.insert([record])
            except ValidationError:
                assert await store.count([bank], NO_FILTERS) == before, (
                    f"refused {record.text!r} but wrote it"
                )
                continue
            hits = await store.vector_search([bank], record.chunks[0].embedding, 1, NO_FILTERS)
            assert (hits[0].text, hits[0].metadata, tuple(hits[0].tags)) == (
                record.text,
                record.metadata,
                record.tags,
            ), f"{record.text!r} did not round-trip"
        await store.insert([make_record(bank, "still works")])
        assert _texts(await store.keyword_search([bank], "works", 5, NO_FILTERS)) == {"still works"}

    async def test_a_memory_id_already_held_is_a_duplicate_and_first_write_wins(self, store: Store) -> None:
        bank = unique_bank("same-id")
        (first,) = await store.insert([make_record(bank, "the original", memory_id="m-1")])
        assert first == InsertOutcome(memory_id="m-1", deduplicated=False)
        again = make_record(bank, "a different text", memory_id="m-1")
        keyed = make_record(bank, "keyed, same id", memory_id="m-1", idempotency_key="fresh-key")
        twins = [make_record(bank, "twin", memory_id="m-2"), make_record(bank, "twin two", memory_id="m-2")]
        outcomes = await store.insert([again, keyed, *twins, make_record(bank, "new", memory_id="m-3")])
        assert [(o.memory_id, o.deduplicated) for o in outcomes] == [
            ("m-1", True), ("m-1", True), ("m-2", False), ("m-2", True), ("m-3", False),
        ]  # fmt: skip
        assert await store.count([bank], NO_FILTERS) == 3
        assert _texts(
            await store.keyword_search([bank], "original different twin keyed", 10, NO_FILTERS)
        ) == {
            "the original",
            "twin",
        }

    async def test_find_keys_names_the_memory_holding_each_stored_key(self, store: Store) -> None:
        find_keys = getattr(store, "find_keys", None)
        if find_keys is None:
            return  # optional: the engine then embeds retried keys again (the insert still dedupes)
        bank, other = unique_bank("keys"), unique_bank("keys-other")
        (held,) = await store.insert([make_record(bank, "keyed", idempotency_key="k1")])
        await store.insert([make_record(other, "same key elsewhere", idempotency_key="k2")])
        found = await find_keys([(bank, "k1"), (bank, "k2"), (bank, "absent"), (unique_bank("none"), "k1")])
        assert found == {(bank, "k1"): held.memory_id}, "keys are scoped to their bank"
        assert await find_keys([]) == {}
        await store.forget(bank, ForgetSelector(memory_ids=(held.memory_id,)))
        assert await find_keys([(bank, "k1")]) == {}, "a forgotten memory frees its key"

    async def test_idempotency_key_is_free_after_forget(self, store: Store) -> None:
        bank = unique_bank("refree")
        (first,) = await store.insert([make_record(bank, "before forget", idempotency_key="k")])
        assert await store.forget(bank, ForgetSelector(memory_ids=(first.memory_id,))) == 1
        record = make_record(bank, "after forget", idempotency_key="k")
        (second,) = await store.insert([record])
        assert (second.memory_id, second.deduplicated) == (record.memory_id, False)

    # -- bank isolation --------------------------------------------------------------------------

    async def test_vector_search_never_crosses_banks(self, store: Store) -> None:
        mine, theirs = unique_bank("mine"), unique_bank("theirs")
        vector = unit_vector("isolation")
        await store.insert([make_record(theirs, "their secret", embedding=vector)])
        await store.insert([make_record(mine, "my note", embedding=unit_vector("elsewhere"))])
        hits = await store.vector_search([mine], vector, 50, NO_FILTERS)
        assert {h.bank_id for h in hits} == {mine}
        assert "their secret" not in _texts(hits)

    async def test_keyword_search_never_crosses_banks(self, store: Store) -> None:
        mine, theirs = unique_bank("mine"), unique_bank("theirs")
        await store.insert([make_record(theirs, "their pelican secret")])
        await store.insert([make_record(mine, "my pelican note")])
        hits = await store.keyword_search([mine], "pelican", 50, NO_FILTERS)
        assert [(h.bank_id, h.text) for h in hits] == [(mine, "my pelican note")]

    async def test_count_never_crosses_banks(self, store: Store) -> None:
        mine, theirs = unique_bank("mine"), unique_bank("theirs")
        await store.insert([make_record(theirs, f"theirs {i}") for i in range(4)])
        await store.insert([make_record(mine, "mine")])
        assert await store.count([mine], NO_FILTERS) == 1

    async def test_forget_never_crosses_banks(self, store: Store) -> None:
        mine, theirs = unique_bank("mine"), unique_bank("theirs")
        (their_id,) = [o.memory_id for o in await store.insert([make_record(theirs, "x", tags=["t"])])]
        await store.insert([make_record(mine, "y", tags=["t"], retained_at=at(0))])
        assert await store.forget(mine, ForgetSelector(memory_ids=(their_id,))) == 0
        assert await store.forget(mine, ForgetSelector(tags=("t",))) == 1
        assert await store.forget(mine, ForgetSelector(all_=True)) == 0
        assert await store.count([theirs], NO_FILTERS) == 1

    async def test_bank_ids_are_exact_and_may_use_every_allowed_character(self, store: Store) -> None:
        suffix = unique_bank("x")
        banks = [
            f"user:alice@example.com.{suffix}",
            f"User:Alice@example.com.{suffix}",
            f"a_b-c.d:{suffix}",
            f"a_b-c.d:{suffix}.",
            (suffix + "9" * 255)[:255],
        ]
        for bank in banks:
            await store.insert([make_record(bank, f"ocelot in {bank}", tags=["t"])])
        for bank in banks:
            hits = await store.keyword_search([bank], "ocelot", 10, NO_FILTERS)
            assert [h.bank_id for h in hits] == [bank]
            assert await store.count([bank], NO_FILTERS) == 1
        assert set(banks) <= set(await store.list_banks())
        assert await store.forget(banks[0], ForgetSelector(tags=("t",))) == 1
        assert await store.delete_bank(banks[4]) == 1
        assert [await store.count([b], NO_FILTERS) for b in banks] == [0, 1, 1, 1, 0]

    async def test_multi_bank_search_covers_exactly_the_named_banks(self, store: Store) -> None:
        banks = [unique_bank(f"multi{i}") for i in range(3)]
        vector = unit_vector("multi")
        for bank in banks:
            await store.insert([make_record(bank, f"walrus in {bank}", embedding=vector)])
        named = banks[:2]
        vector_hits, keyword_hits = await _search_both(store, named, "walrus", vector, NO_FILTERS)
        assert {h.bank_id for h in vector_hits} == set(named)
        assert {h.bank_id for h in keyword_hits} == set(named)
        assert await store.count(named, NO_FILTERS) == 2
        assert await store.count(banks, NO_FILTERS) == 3

    async def test_multi_bank_vector_search_ranks_across_banks(self, store: Store) -> None:
        bank_a, bank_b = unique_bank("rank-a"), unique_bank("rank-b")
        await store.insert([make_record(bank_a, "a at 60", embedding=angled_vector(60))])
        await store.insert(
            [
                make_record(bank_b, "b at 90", embedding=angled_vector(90)),
                make_record(bank_b, "b at 0", embedding=angled_vector(0)),
            ]
        )
        hits = await store.vector_search([bank_a, bank_b], angled_vector(0), 10, NO_FILTERS)
        assert [h.text for h in hits] == ["b at 0", "a at 60", "b at 90"]
        top = await store.vector_search([bank_a, bank_b], angled_vector(0), 2, NO_FILTERS)
        assert [h.text for h in top] == ["b at 0", "a at 60"]

    async def test_search_of_absent_or_no_banks_is_empty(self, store: Store) -> None:
        absent = unique_bank("absent")
        assert await store.vector_search([absent], unit_vector("q"), 10, NO_FILTERS) == []
        assert await store.keyword_search([absent], "anything", 10, NO_FILTERS) == []
        assert await store.count([absent], NO_FILTERS) == 0
        assert await store.vector_search([], unit_vector("q"), 10, NO_FILTERS) == []
        assert await store.keyword_search([], "anything", 10, NO_FILTERS) == []
        assert await store.count([], NO_FILTERS) == 0

    # -- hits and ranking ------------------------------------------------------------------------

    async def test_hits_carry_the_record_fields(self, store: Store) -> None:
        bank = unique_bank("fields")
        metadata = {"n": 1, "f": 0.5, "s": "ü", "nested": {"list": [1, "two", None], "flag": True}}
        record = make_record(
            bank,
            "the okapi field test",
            tags=["b", "a"],
            metadata=metadata,
            occurred_at=at(5),
            retained_at=at(6),
            source="github:issues",
        )
        await store.insert([record])
        vector_hits, keyword_hits = await _search_both(
            store, [bank], "okapi", record.chunks[0].embedding, NO_FILTERS
        )
        for hit in (vector_hits[0], keyword_hits[0]):
            assert (hit.memory_id, hit.bank_id, hit.chunk_index) == (record.memory_id, bank, 0)
            assert hit.text == "the okapi field test"
            assert sorted(hit.tags) == ["a", "b"]
            assert hit.metadata == metadata
            assert hit.occurred_at == at(5) and hit.retained_at == at(6)
            assert hit.source == "github:issues"

    async def test_stored_memories_do_not_change_with_callers_objects(self, store: Store) -> None:
        bank = unique_bank("copies")
        record = make_record(bank, "the gecko copy", metadata={"nested": {"n": 1}})
        await store.insert([record])
        record.metadata["nested"]["n"] = 2
        (hit,) = await store.keyword_search([bank], "gecko", 5, NO_FILTERS)
        assert hit.metadata == {"nested": {"n": 1}}
        hit.metadata["nested"]["n"] = 3
        (again,) = await store.keyword_search([bank], "gecko", 5, NO_FILTERS)
        assert again.metadata == {"nested": {"n": 1}}

    async def test_absent_optional_fields_come_back_empty(self, store: Store) -> None:
        bank = unique_bank("bare")
        record = make_record(bank, "bare capybara", retained_at=at(1))
        await store.insert([record])
        (hit,) = await store.keyword_search([bank], "capybara", 5, NO_FILTERS)
        assert (tuple(hit.tags), hit.metadata, hit.occurred_at, hit.source) == ((), {}, None, None)

    async def test_vector_search_puts_the_exact_vector_first(self, store: Store) -> None:
        bank = unique_bank("nearest")
        records = [make_record(bank, f"random {i}") for i in range(40)]
        await store.insert(records)
        for target in (records[0], records[17], records[39]):
            hits = await store.vector_search([bank], target.chunks[0].embedding, 5, NO_FILTERS)
            assert hits[0].memory_id == target.memory_id
            assert math.isclose(hits[0].score, 1.0, abs_tol=SCORE_TOLERANCE)
            _assert_best_first(hits, "vector")

    async def test_vector_scores_are_cosine_similarity_best_first(self, store: Store) -> None:
        bank = unique_bank("cosine")
        angles = [0, 30, 60, 90, 120, 180]
        await store.insert(
            [make_record(bank, f"angle {a}", embedding=angled_vector(a)) for a in reversed(angles)]
        )
        hits = await store.vector_search([bank], angled_vector(0), 10, NO_FILTERS)
        assert [h.text for h in hits] == [f"angle {a}" for a in angles]
        for hit, angle in zip(hits, angles, strict=True):
            expected = math.cos(math.radians(angle))
            assert math.isclose(hit.score, expected, abs_tol=SCORE_TOLERANCE), (
                f"score {hit.score} for a vector at {angle} degrees, expected cosine {expected:.4f}"
            )

    async def test_vector_search_with_a_wrong_sized_query_raises_validation_error(self, store: Store) -> None:
        bank = unique_bank("dimquery")
        await store.insert([make_record(bank, "sets the dimension")])
        with pytest.raises(ValidationError) as caught:
            await store.vector_search([bank], unit_vector("q", CONTRACT_DIMENSIONS + 1), 5, NO_FILTERS)
        assert caught.value.code == "embedding_dimension_mismatch"

    async def test_vector_scores_stay_finite_for_a_zero_vector(self, store: Store) -> None:
        # Embedders should never produce one, but a NaN score would poison fusion and JSON output.
        bank = unique_bank("zero")
        zero = np.zeros(CONTRACT_DIMENSIONS, dtype=np.float32)
        record = make_record(bank, "zero", embedding=angled_vector(0))
        stored_zero = dataclasses.replace(record.chunks[0], embedding=zero)
        await store.insert(
            [record, dataclasses.replace(record, memory_id=record.memory_id + "z", chunks=(stored_zero,))]
        )
        for query in (zero, angled_vector(0)):
            hits = await store.vector_search([bank], query, 5, NO_FILTERS)
            scores = [h.score for h in hits]
            assert all(
                math.isfinite(x) and -1 - SCORE_TOLERANCE <= x <= 1 + SCORE_TOLERANCE for x in scores
            ), f"scores {scores} are not finite cosine similarities"

    async def test_search_returns_at_most_k_hits(self, store: Store) -> None:
        bank = unique_bank("k")
        await store.insert([make_record(bank, f"lemur number {i}") for i in range(12)])
        for k in (1, 5):
            assert len(await store.vector_search([bank], unit_vector("q"), k, NO_FILTERS)) == k
            assert len(await store.keyword_search([bank], "lemur", k, NO_FILTERS)) == k
        assert len(await store.keyword_search([bank], "lemur", 100, NO_FILTERS)) == 12

    async def test_vector_search_with_a_selective_filter_still_finds_every_match(self, store: Store) -> None:
        bank = unique_bank("selective")
        query = unit_vector("selective query")
        # The rare records point away from the query, so an index that filters after taking its
        # nearest neighbours would lose them behind the many closer, unfiltered ones.
        rare = [make_record(bank, f"rare {i}", tags=["rare"], embedding=-query + 0.01 * i) for i in range(5)]
        common = [make_record(bank, f"common {i}", tags=["common"]) for i in range(300)]
        await store.insert(common[:150] + rare + common[150:])
        filters = SearchFilters(tags=("rare",))
        hits = await store.vector_search([bank], query, 5, filters)
        assert _ids(hits) == {r.memory_id for r in rare}
        _assert_best_first(hits, "vector")

    async def test_keyword_search_finds_only_documents_with_the_word(self, store: Store) -> None:
        bank = unique_bank("words")
        await store.insert(
            [
                make_record(bank, "a giraffe at the river"),
                make_record(bank, "a hippo at the river"),
                make_record(bank, "giraffe and hippo together"),
            ]
        )
        hits = await store.keyword_search([bank], "giraffe", 10, NO_FILTERS)
        assert _texts(hits) == {"a giraffe at the river", "giraffe and hippo together"}
        _assert_best_first(hits, "keyword")

    async def test_keyword_search_is_case_insensitive(self, store: Store) -> None:
        bank = unique_bank("case")
        await store.insert([make_record(bank, "The Quokka smiles")])
        for query in ("quokka", "QUOKKA", "Quokka"):
            assert _texts(await store.keyword_search([bank], query, 5, NO_FILTERS)) == {"The Quokka smiles"}

    async def test_keyword_search_ranks_a_document_with_every_word_first(self, store: Store) -> None:
        bank = unique_bank("rank")
        await store.insert(
            [
                make_record(bank, "saxophone concert tonight"),
                make_record(bank, "saxophone harmonica duet tonight"),
                make_record(bank, "harmonica lesson tonight"),
            ]
        )
        hits = await store.keyword_search([bank], "saxophone harmonica", 10, NO_FILTERS)
        assert hits and hits[0].text == "saxophone harmonica duet tonight"
        _assert_best_first(hits, "keyword")

    async def test_keyword_search_ranks_the_query_text_first(self, store: Store) -> None:
        # BM25 prefers the repetitive chunks; a chunk whose text is the query (word for word:
        # case and punctuation aside) must still come first, ahead of more than a page of them.
        bank = unique_bank("exact")
        fillers = [make_record(bank, f"crimson lamp crimson lamp shelf {i}") for i in range(40)]
        await store.insert([*fillers, make_record(bank, "Crimson lamp.")])
        for query in ("crimson lamp", "CRIMSON, lamp"):
            hits = await store.keyword_search([bank], query, 5, NO_FILTERS)
            assert hits and hits[0].text == "Crimson lamp.", (
                f"query {query!r} ranked {[h.text for h in hits]}"
            )
            assert len(hits) == 5
            _assert_best_first(hits, "keyword")

    async def test_keyword_search_matches_any_word_of_a_question(self, store: Store) -> None:
        bank = unique_bank("question")
        await store.insert([make_record(bank, "the wombat digs a burrow"), make_record(bank, "unrelated")])
        for query in ("where did my wombat go yesterday?", "wombat?", '"wombat"', "(wombat)", "wombat's"):
            texts = _texts(await store.keyword_search([bank], query, 5, NO_FILTERS))
            assert texts == {"the wombat digs a burrow"}, f"query {query!r} found {texts}"

    async def test_keyword_search_survives_hostile_queries(self, store: Store) -> None:
        bank = unique_bank("hostile")
        await store.insert([make_record(bank, "zebra crossing near the word list")])
        for query in HOSTILE_QUERIES:
            hits = await store.keyword_search([bank], query, 3, NO_FILTERS)
            assert isinstance(hits, list) and len(hits) <= 3, f"bad answer for query {query!r}"
        # The store still works afterwards (no poisoned connection or transaction).
        assert _texts(await store.keyword_search([bank], "zebra", 3, NO_FILTERS)) == {
            "zebra crossing near the word list"
        }

    # -- filters ---------------------------------------------------------------------------------

    async def test_tag_filter_requires_every_tag(self, store: Store) -> None:
        bank = unique_bank("tags")
        vector = unit_vector("tagged")
        for name, tags in (("only x", ["x"]), ("x and y", ["x", "y"]), ("only y", ["y"]), ("none", [])):
            await store.insert([make_record(bank, f"ibis {name}", tags=tags, embedding=vector)])
        for wanted, expected in ((("x",), {"ibis only x", "ibis x and y"}), (("x", "y"), {"ibis x and y"})):
            filters = SearchFilters(tags=wanted)
            vector_hits, keyword_hits = await _search_both(store, [bank], "ibis", vector, filters)
            assert _texts(vector_hits) == expected, f"vector arm with tags {wanted}"
            assert _texts(keyword_hits) == expected, f"keyword arm with tags {wanted}"
            assert await store.count([bank], filters) == len(expected)
        assert await store.count([bank], SearchFilters(tags=("x", "z"))) == 0

    async def test_tag_filter_matches_whole_tags_literally(self, store: Store) -> None:
        bank = unique_bank("literal")
        vector = unit_vector("literal")
        for tags in (["abc"], ["a_c"], ["project:alpha"], ["a,b", "c"], ['q"uote']):
            await store.insert([make_record(bank, f"marten {' '.join(tags)}", tags=tags, embedding=vector)])
        cases = {
            ("a_c",): 1,
            ("%",): 0,
            ("_",): 0,
            ("ab",): 0,
            ("project",): 0,
            ("alpha",): 0,
            ("a",): 0,
            ("a,b",): 1,
            ("a,b", "c"): 1,
            ('q"uote',): 1,
        }
        for wanted, expected in cases.items():
            filters = SearchFilters(tags=wanted)
            vector_hits, keyword_hits = await _search_both(store, [bank], "marten", vector, filters)
            counted = await store.count([bank], filters)
            assert (len(vector_hits), len(keyword_hits), counted) == (expected,) * 3, f"tags {wanted}"
        assert await store.forget(bank, ForgetSelector(tags=("%",))) == 0
        assert await store.forget(bank, ForgetSelector(tags=("a_c",))) == 1

    async def test_time_filter_uses_occurred_at_else_retained_at(self, store: Store) -> None:
        bank = unique_bank("when")
        vector = unit_vector("when")
        await store.insert(
            [
                make_record(
                    bank, "heron occurred inside", occurred_at=at(10), retained_at=at(100), embedding=vector
                ),
                make_record(
                    bank, "heron retained inside", occurred_at=None, retained_at=at(10), embedding=vector
                ),
                make_record(
                    bank, "heron occurred outside", occurred_at=at(1), retained_at=at(10), embedding=vector
                ),
            ]
        )
        filters = SearchFilters(start=at(5), end=at(20))
        expected = {"heron occurred inside", "heron retained inside"}
        vector_hits, keyword_hits = await _search_both(store, [bank], "heron", vector, filters)
        assert _texts(vector_hits) == expected
        assert _texts(keyword_hits) == expected
        assert await store.count([bank], filters) == 2

    async def test_time_filter_start_is_inclusive_and_end_exclusive(self, store: Store) -> None:
        bank = unique_bank("bounds")
        vector = unit_vector("bounds")
        await store.insert(
            [
                make_record(bank, f"bittern hour {h}", occurred_at=at(h), embedding=vector)
                for h in (1, 2, 3, 4)
            ]
        )
        cases = {
            SearchFilters(start=at(2), end=at(4)): {"bittern hour 2", "bittern hour 3"},
            SearchFilters(start=at(2)): {"bittern hour 2", "bittern hour 3", "bittern hour 4"},
            SearchFilters(end=at(2)): {"bittern hour 1"},
            SearchFilters(start=at(2), end=at(2)): set(),
        }
        for filters, expected in cases.items():
            vector_hits, keyword_hits = await _search_both(store, [bank], "bittern", vector, filters)
            assert _texts(vector_hits) == expected, f"vector arm with {filters}"
            assert _texts(keyword_hits) == expected, f"keyword arm with {filters}"
            assert await store.count([bank], filters) == len(expected)

    async def test_time_filter_compares_instants_across_time_zones(self, store: Store) -> None:
        bank = unique_bank("tz")
        plus_two = timezone(timedelta(hours=2))
        await store.insert([make_record(bank, "tz egret", occurred_at=at(10).astimezone(plus_two))])
        inside = SearchFilters(start=at(10), end=at(11))
        outside = SearchFilters(start=at(10) + timedelta(seconds=1))
        assert await store.count([bank], inside) == 1
        assert await store.count([bank], outside) == 0

    # -- chunks ----------------------------------------------------------------------------------

    async def test_multi_chunk_memory_is_found_through_any_chunk(self, store: Store) -> None:
        bank = unique_bank("chunks")
        record = make_record(bank, "", chunks=["alpha tapir part", "beta marmot part", "gamma dingo part"])
        await store.insert([record, make_record(bank, "unrelated filler")])
        for chunk, word in zip(record.chunks, ("tapir", "marmot", "dingo"), strict=True):
            (keyword_hit,) = await store.keyword_search([bank], word, 5, NO_FILTERS)
            assert (keyword_hit.memory_id, keyword_hit.chunk_index) == (record.memory_id, chunk.index)
            assert keyword_hit.text == chunk.text
            vector_hit = (await store.vector_search([bank], chunk.embedding, 1, NO_FILTERS))[0]
            assert (vector_hit.memory_id, vector_hit.chunk_index) == (record.memory_id, chunk.index)
            assert vector_hit.text == chunk.text

    async def test_multi_chunk_memory_counts_once(self, store: Store) -> None:
        bank = unique_bank("chunkcount")
        await store.insert([make_record(bank, "", chunks=["one", "two", "three"], tags=["t"])])
        assert await store.count([bank], NO_FILTERS) == 1
        assert await store.count([bank], SearchFilters(tags=("t",))) == 1

    async def test_forget_removes_every_chunk(self, store: Store) -> None:
        bank = unique_bank("chunkforget")
        record = make_record(bank, "", chunks=["first jackal", "second jackal", "third jackal"])
        await store.insert([record])
        assert await store.forget(bank, ForgetSelector(memory_ids=(record.memory_id,))) == 1
        assert await store.keyword_search([bank], "jackal", 10, NO_FILTERS) == []
        for chunk in record.chunks:
            assert record.memory_id not in _ids(
                await store.vector_search([bank], chunk.embedding, 10, NO_FILTERS)
            )
        assert (await store.bank_stats(bank)).chunk_count == 0

    # -- forget ----------------------------------------------------------------------------------

    async def _forget_fixture(self, store: Store) -> tuple[str, list[MemoryRecord]]:
        """Four memories: tags {a}, {a,b}, {b}, {} retained at hours 1..4."""
        bank = unique_bank("forget")
        records = [
            make_record(bank, f"memory {i}", tags=tags, retained_at=at(i + 1), occurred_at=at(50 - i))
            for i, tags in enumerate((["a"], ["a", "b"], ["b"], []))
        ]
        await store.insert(records)
        return bank, records

    async def _remaining(self, store: Store, bank: str) -> set[str]:
        hits = await store.vector_search([bank], unit_vector("any"), 100, NO_FILTERS)
        return {h.text for h in hits}

    async def test_forget_by_ids_deletes_only_those(self, store: Store) -> None:
        bank, records = await self._forget_fixture(store)
        selector = ForgetSelector(memory_ids=(records[0].memory_id, records[2].memory_id, "no-such-id"))
        assert await store.forget(bank, selector) == 2
        assert await self._remaining(store, bank) == {"memory 1", "memory 3"}

    async def test_forget_by_tags_requires_every_tag(self, store: Store) -> None:
        bank, _ = await self._forget_fixture(store)
        assert await store.forget(bank, ForgetSelector(tags=("a", "b"))) == 1
        assert await self._remaining(store, bank) == {"memory 0", "memory 2", "memory 3"}
        assert await store.forget(bank, ForgetSelector(tags=("b",))) == 1
        assert await self._remaining(store, bank) == {"memory 0", "memory 3"}

    async def test_forget_before_uses_retained_at_exclusively(self, store: Store) -> None:
        bank, _ = await self._forget_fixture(store)
        # retained at hours 1..4; occurred_at is far later and must be ignored.
        assert await store.forget(bank, ForgetSelector(before=at(3))) == 2
        assert await self._remaining(store, bank) == {"memory 2", "memory 3"}

    async def test_forget_selectors_combine_with_and(self, store: Store) -> None:
        bank, records = await self._forget_fixture(store)
        ids = tuple(r.memory_id for r in records[:3])
        assert await store.forget(bank, ForgetSelector(memory_ids=ids, tags=("b",), before=at(3))) == 1
        assert await self._remaining(store, bank) == {"memory 0", "memory 2", "memory 3"}
        assert await store.forget(bank, ForgetSelector(memory_ids=ids, tags=("a",))) == 1
        assert await self._remaining(store, bank) == {"memory 2", "memory 3"}

    async def test_forget_all_clears_only_that_bank(self, store: Store) -> None:
        bank, _ = await self._forget_fixture(store)
        other = unique_bank("forget-other")
        await store.insert([make_record(other, "stays")])
        assert await store.forget(bank, ForgetSelector(all_=True)) == 4
        assert await store.count([bank], NO_FILTERS) == 0
        assert await store.count([other], NO_FILTERS) == 1

    async def test_forget_all_with_another_selector_is_rejected(self, store: Store) -> None:
        bank, records = await self._forget_fixture(store)
        with pytest.raises(ValidationError):
            await store.forget(bank, ForgetSelector(all_=True, memory_ids=(records[0].memory_id,)))
        assert await store.count([bank], NO_FILTERS) == 4

    async def test_forget_with_an_empty_selector_is_rejected(self, store: Store) -> None:
        bank, _ = await self._forget_fixture(store)
        with pytest.raises(ValidationError):
            await store.forget(bank, ForgetSelector())
        assert await store.count([bank], NO_FILTERS) == 4

    async def test_forget_of_absent_bank_returns_zero(self, store: Store) -> None:
        assert await store.forget(unique_bank("nothing"), ForgetSelector(all_=True)) == 0

    # -- state, leases, health -------------------------------------------------------------------

    async def test_state_round_trips_and_namespaces_are_separate(self, store: Store) -> None:
        ns_a, ns_b = unique_bank("ns"), unique_bank("ns")
        assert await store.get_state(ns_a, "cursor") is None
        await store.set_state(ns_a, "cursor", "42")
        await store.set_state(ns_b, "cursor", '{"etag": "W/\\"x\\""}')
        assert await store.get_state(ns_a, "cursor") == "42"
        await store.set_state(ns_a, "cursor", "43")
        assert await store.get_state(ns_a, "cursor") == "43"
        assert await store.get_state(ns_b, "cursor") == '{"etag": "W/\\"x\\""}'
        assert await store.get_state(ns_a, "other") is None

    async def test_lease_is_exclusive_to_one_holder(self, store: Store) -> None:
        name = unique_bank("lease")
        results = await asyncio.gather(*(store.try_lease(name, f"replica-{i}", 30) for i in range(10)))
        assert sum(results) == 1, f"{sum(results)} holders took the same lease"
        winner = f"replica-{results.index(True)}"
        assert await store.try_lease(name, winner, 30) is True
        loser = "replica-x"
        assert await store.try_lease(name, loser, 30) is False

    async def test_lease_holder_can_renew_past_the_first_ttl(self, store: Store) -> None:
        name = unique_bank("renew")
        assert await store.try_lease(name, "a", 2.0)
        await asyncio.sleep(1.0)
        assert await store.try_lease(name, "a", 10.0)
        await asyncio.sleep(1.5)  # past the first ttl, inside the renewed one
        assert await store.try_lease(name, "b", 10.0) is False

    async def test_lease_expires_after_its_ttl(self, store: Store) -> None:
        name = unique_bank("expiry")
        assert await store.try_lease(name, "a", 1.0)
        assert await store.try_lease(name, "b", 1.0) is False
        await asyncio.sleep(1.6)
        assert await store.try_lease(name, "b", 30) is True
        assert await store.try_lease(name, "a", 30) is False

    async def test_lease_release_frees_it_for_another_holder(self, store: Store) -> None:
        release = _optional(store, "release_lease")
        name = unique_bank("release")
        assert await store.try_lease(name, "a", 30)
        assert await release(name, "b") is False, "a non-holder released the lease"
        assert await store.try_lease(name, "b", 30) is False
        assert await release(name, "a") is True
        assert await store.try_lease(name, "b", 30) is True

    # -- keyed memories (one memory per external object) ----------------------------------------

    async def test_keyed_new_version_replaces_the_memory(self, store: Store) -> None:
        upsert = _optional(store, "upsert_keyed")
        bank = unique_bank("keyed")
        first = make_record(bank, "zebra crossing near the old mill", idempotency_key="issue-7@1")
        [one] = await upsert([dataclasses.replace(first, memory_key="issue-7")])
        assert one.deduplicated is False
        second = make_record(bank, "giraffe bridge over the river", idempotency_key="issue-7@2")
        [two] = await upsert([dataclasses.replace(second, memory_key="issue-7")])
        assert two == InsertOutcome(one.memory_id, False), "a replace keeps the memory id"
        assert await store.count([bank], NO_FILTERS) == 1, "the old version was left as a copy"
        assert not await store.keyword_search([bank], "zebra", 5, NO_FILTERS), "old text still indexed"
        [hit] = await store.keyword_search([bank], "giraffe", 5, NO_FILTERS)
        assert (hit.memory_id, hit.text) == (one.memory_id, "giraffe bridge over the river")
        [near] = await store.vector_search([bank], second.chunks[0].embedding, 5, NO_FILTERS)
        assert near.memory_id == one.memory_id and near.score > 0.999, "the new version is not re-embedded"
        assert await store.bank_stats(bank) is not None
        assert (await store.bank_stats(bank)).chunk_count == 1

    async def test_keyed_same_version_is_a_duplicate(self, store: Store) -> None:
        upsert = _optional(store, "upsert_keyed")
        bank = unique_bank("keyed-dup")
        record = _keyed(bank, "same text", "v1", "k")
        [first] = await upsert([record])
        again = dataclasses.replace(record, memory_id="another-id", text="same text, other id")
        [second] = await upsert([again])
        assert second == InsertOutcome(first.memory_id, True)
        [plain] = await store.insert([make_record(bank, "plain retry", idempotency_key="v1")])
        assert plain == InsertOutcome(first.memory_id, True), "a keyed memory's idempotency key is not held"
        assert await store.count([bank], NO_FILTERS) == 1

    async def test_keyed_versions_in_one_call_leave_the_last(self, store: Store) -> None:
        upsert = _optional(store, "upsert_keyed")
        bank = unique_bank("keyed-batch")
        versions = [_keyed(bank, f"version number {i}", f"v{i}", "k") for i in range(3)]
        outcomes = await upsert(versions)
        assert len({o.memory_id for o in outcomes}) == 1
        [hit] = await store.keyword_search([bank], "version", 5, NO_FILTERS)
        assert hit.text == "version number 2"

    async def test_keyed_concurrent_versions_leave_one_memory(self, store: Store) -> None:
        upsert = _optional(store, "upsert_keyed")
        bank = unique_bank("keyed-race")
        records = [_keyed(bank, f"racing edit {i}", f"e{i}", "issue") for i in range(12)]
        results = await asyncio.gather(*(upsert([record]) for record in records))
        assert len({outcome.memory_id for [outcome] in results}) == 1
        assert await store.count([bank], NO_FILTERS) == 1
        assert len(await store.keyword_search([bank], "racing edit", 20, NO_FILTERS)) == 1

    async def test_forget_keys_deletes_only_the_keyed_memories(self, store: Store) -> None:
        upsert, forget_keys = _optional(store, "upsert_keyed"), _optional(store, "forget_keys")
        bank = unique_bank("keyed-forget")
        a = _keyed(bank, "comment one", "a@1", "a")
        b = _keyed(bank, "comment two", "b@1", "b")
        await upsert([a, b])
        await store.insert([make_record(bank, "unkeyed note")])
        assert await forget_keys(bank, ["a", "missing"]) == 1
        assert await forget_keys(bank, ["a"]) == 0
        assert await store.count([bank], NO_FILTERS) == 2
        assert not await store.keyword_search([bank], "one", 5, NO_FILTERS)
        [again] = await upsert([a])
        assert again.deduplicated is False, "forgetting a keyed memory must free its idempotency key"
        assert await forget_keys(unique_bank("absent"), ["a"]) == 0

    async def test_keyed_memory_forgotten_by_id_can_come_back(self, store: Store) -> None:
        upsert = _optional(store, "upsert_keyed")
        bank = unique_bank("keyed-byid")
        record = _keyed(bank, "returning issue", "r@1", "r")
        [first] = await upsert([record])
        assert await store.forget(bank, ForgetSelector(memory_ids=(first.memory_id,))) == 1
        [back] = await upsert([dataclasses.replace(record, idempotency_key="r@2")])
        assert back.deduplicated is False
        assert await store.count([bank], NO_FILTERS) == 1

    async def test_health_reports_healthy(self, store: Store) -> None:
        report = await store.health()
        assert isinstance(report, ComponentHealth)
        assert report.healthy is True, report.detail
        assert report.name
