"""The store contract kit can fail: small deliberately broken stores must each fail the checks
that cover their bug. A kit that passes everything proves nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from astrocyte.providers import Store
from astrocyte.stores.memory import MemoryStore, as_aware, tokenize
from astrocyte.testing.store_contract import StoreContract, contract_checks
from astrocyte.types import ForgetSelector, InsertOutcome, MemoryRecord, SearchFilters, StoredHit


class LeaksAcrossBanks(MemoryStore):
    """Searches and counts every bank, whatever the caller named."""

    def _candidates(self, bank_ids: Iterable[str], filters: SearchFilters):  # type: ignore[no-untyped-def]
        return super()._candidates(list(self._banks), filters)


class IgnoresIdempotencyKeys(MemoryStore):
    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        return await super().insert([dataclasses.replace(r, idempotency_key=None) for r in records])


class ChecksThenWritesWithoutLock(MemoryStore):
    """Looks the key up, yields to the loop, then writes: the classic check-then-act race."""

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        outcomes = []
        for record in records:
            bank = self._banks.get(record.bank_id)
            if bank and record.idempotency_key in bank.keys:
                outcomes.append(InsertOutcome(bank.keys[record.idempotency_key], True))
                continue
            await asyncio.sleep(0)
            self._ensure_bank(record.bank_id)
            outcomes.append(self._insert_one(dataclasses.replace(record, idempotency_key=None)))
            if record.idempotency_key is not None:
                self._banks[record.bank_id].keys[record.idempotency_key] = record.memory_id
        return outcomes


class InclusiveEnd(MemoryStore):
    def _candidates(self, bank_ids: Iterable[str], filters: SearchFilters):  # type: ignore[no-untyped-def]
        widened = dataclasses.replace(filters, end=None)
        found = super()._candidates(bank_ids, widened)
        if filters.end is None:
            return found
        end = as_aware(filters.end)
        return [s for s in found if as_aware(s.record.occurred_at or s.record.retained_at) <= end]


class WritesBeforeValidating(MemoryStore):
    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        outcomes = []
        for record in records:
            outcomes.extend(await super().insert([record]))
        return outcomes


class EmptySelectorMeansEverything(MemoryStore):
    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        if selector == ForgetSelector():
            selector = ForgetSelector(all_=True)
        return await super().forget(bank_id, selector)


class WorstFirst(MemoryStore):
    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        hits = await super().vector_search(bank_ids, embedding, 10_000, filters)
        return list(reversed(hits))[:k]


class SearchesBanksOneByOne(MemoryStore):
    """Ranks within each bank and concatenates, instead of ranking across the named banks."""

    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        hits: list[StoredHit] = []
        for bank_id in bank_ids:
            hits.extend(await super().vector_search([bank_id], embedding, k, filters))
        return hits[:k]


class AllWordsRequired(MemoryStore):
    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        hits = await super().keyword_search(bank_ids, query, 10_000, filters)
        words = set(tokenize(query))
        return [h for h in hits if words <= set(tokenize(h.text))][:k]


BROKEN: dict[type[MemoryStore], tuple[str, ...]] = {
    LeaksAcrossBanks: (
        "test_vector_search_never_crosses_banks",
        "test_keyword_search_never_crosses_banks",
        "test_count_never_crosses_banks",
        "test_multi_bank_search_covers_exactly_the_named_banks",
    ),
    IgnoresIdempotencyKeys: (
        "test_same_key_same_bank_is_deduplicated_to_the_original",
        "test_duplicate_keys_within_one_batch_write_once",
        "test_concurrent_writers_store_one_memory_per_key",
    ),
    ChecksThenWritesWithoutLock: ("test_concurrent_writers_store_one_memory_per_key",),
    InclusiveEnd: ("test_time_filter_start_is_inclusive_and_end_exclusive",),
    WritesBeforeValidating: ("test_dimension_mismatch_writes_nothing",),
    EmptySelectorMeansEverything: ("test_forget_with_an_empty_selector_is_rejected",),
    SearchesBanksOneByOne: ("test_multi_bank_vector_search_ranks_across_banks",),
    AllWordsRequired: ("test_keyword_search_matches_any_word_of_a_question",),
    WorstFirst: (
        "test_vector_search_puts_the_exact_vector_first",
        "test_vector_scores_are_cosine_similarity_best_first",
    ),
}

CASES = [(cls, check) for cls, checks in BROKEN.items() for check in checks]


async def _run_check(store: Store, check: str) -> None:
    await store.open()
    try:
        await getattr(StoreContract(), check)(store)
    finally:
        await store.close()


@pytest.mark.parametrize(("broken", "check"), CASES, ids=[f"{c.__name__}-{n}" for c, n in CASES])
async def test_contract_check_fails_on_a_store_with_that_bug(broken: type[MemoryStore], check: str) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        await _run_check(broken({}), check)


@pytest.mark.parametrize("check", sorted({check for _, check in CASES}))
async def test_contract_check_passes_on_the_reference_store(check: str) -> None:
    await _run_check(MemoryStore({}), check)


def test_contract_checks_lists_every_behaviour() -> None:
    checks = contract_checks()
    assert len(checks) >= 45
    assert {check for _, check in CASES} <= set(checks)
