"""Recall: fusion, multi-bank, filters, budgets, traces and missing banks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from astrocyte.errors import NotFoundError, ValidationError
from astrocyte.tokens import estimate_tokens

DAY = timedelta(days=1)
T0 = datetime(2024, 1, 10, tzinfo=UTC)


async def seed(brain: Astrocyte) -> None:
    await brain.retain("Alice prefers green tea over coffee.", "user:alice", tags=["drinks"], occurred_at=T0)
    await brain.retain("Alice is allergic to peanuts.", "user:alice", tags=["health"], occurred_at=T0 + DAY)
    await brain.retain(
        "Alice drinks tea every afternoon.", "user:alice", tags=["drinks"], occurred_at=T0 + 2 * DAY
    )
    await brain.retain("The team standup is at 9am.", "team:core", tags=["schedule"], occurred_at=T0)
    await brain.retain(
        "The team prefers tea at the offsite.", "team:core", tags=["drinks"], occurred_at=T0 + DAY
    )


async def test_recall_ranks_the_matching_memory_first(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("is Alice allergic to anything?", "user:alice")
    assert result.hits[0].text == "Alice is allergic to peanuts."
    assert all(0.0 <= h.score <= 1.0 for h in result.hits)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert result.total_available == 3 and not result.truncated


async def test_recall_stays_inside_the_named_bank(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("tea", "team:core")
    assert {h.bank_id for h in result.hits} == {"team:core"}


async def test_multi_bank_recall_merges_banks(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("who prefers tea?", banks=["user:alice", "team:core"])
    assert {h.bank_id for h in result.hits} == {"user:alice", "team:core"}
    assert result.trace["banks"] == ["user:alice", "team:core"]
    both = await brain.recall("who prefers tea?", "user:alice", banks=["team:core", "user:alice"])
    assert both.trace["banks"] == ["user:alice", "team:core"]


async def test_tag_filter_requires_every_tag(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("Alice", "user:alice", tags=["drinks"])
    assert len(result.hits) == 2 and all("drinks" in h.tags for h in result.hits)
    assert (await brain.recall("Alice", "user:alice", tags=["drinks", "health"])).hits == []


async def test_time_range_is_start_inclusive_end_exclusive(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("Alice", "user:alice", time_range=(T0 + DAY, T0 + 2 * DAY))
    assert [h.text for h in result.hits] == ["Alice is allergic to peanuts."]
    open_start = await brain.recall("Alice", "user:alice", time_range=(None, T0 + DAY))
    assert [h.text for h in open_start.hits] == ["Alice prefers green tea over coffee."]


async def test_max_results_caps_the_hits(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("Alice tea peanuts", "user:alice", max_results=2)
    assert len(result.hits) == 2 and result.total_available == 3 and not result.truncated


async def test_token_budget_truncates_and_says_so(brain: Astrocyte) -> None:
    await seed(brain)
    full = await brain.recall("Alice tea peanuts", "user:alice")
    first_cost = estimate_tokens(full.hits[0].text)
    budget = first_cost + estimate_tokens(full.hits[1].text) - 1
    result = await brain.recall("Alice tea peanuts", "user:alice", max_tokens=budget)
    assert [h.memory_id for h in result.hits] == [full.hits[0].memory_id]
    assert result.truncated
    roomy = await brain.recall("Alice tea peanuts", "user:alice", max_tokens=10_000)
    assert len(roomy.hits) == 3 and not roomy.truncated


async def test_trace_reports_arms_and_timings(brain: Astrocyte) -> None:
    await seed(brain)
    trace = (await brain.recall("tea", "user:alice")).trace
    assert trace["vector_hits"] == 2 and trace["keyword_hits"] == 2 and trace["fused_memories"] == 2
    assert set(trace["timings_ms"]) == {"embed", "search", "fuse", "total"}


async def test_memories_sharing_nothing_with_the_query_are_not_returned(brain: Astrocyte) -> None:
    await seed(brain)
    result = await brain.recall("quantum chromodynamics", "user:alice")
    assert result.hits == [] and result.total_available == 0


async def test_keeping_unrelated_vector_hits_is_configurable(make_brain: Any) -> None:
    async with make_brain(recall={"min_similarity": None}) as brain:
        await seed(brain)
        result = await brain.recall("quantum chromodynamics", "user:alice")
        assert len(result.hits) == 3 and all(h.score < 0.6 for h in result.hits)


async def test_recall_of_an_absent_bank_is_not_found(brain: Astrocyte) -> None:
    await seed(brain)
    with pytest.raises(NotFoundError) as info:
        await brain.recall("tea", banks=["user:alice", "user:nobody"])
    assert info.value.code == "bank_not_found"


async def test_an_empty_existing_bank_recalls_nothing(brain: Astrocyte) -> None:
    await brain.create_bank("empty")
    result = await brain.recall("anything", "empty")
    assert result.hits == [] and result.total_available == 0 and result.authority_context is None


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"query": "  "}, "query_empty"),
        ({"bank_id": None}, "bank_required"),
        ({"max_results": 0}, "max_results_invalid"),
        ({"max_tokens": 0}, "max_tokens_invalid"),
        ({"time_range": (T0, T0 - DAY)}, "time_range_invalid"),
        ({"tags": "drinks"}, "tags_invalid"),
        ({"bank_id": "bad bank"}, "bank_id_invalid"),
    ],
)
async def test_bad_recall_arguments_are_validation_errors(
    brain: Astrocyte, kwargs: dict[str, Any], code: str
) -> None:
    await seed(brain)
    arguments: dict[str, Any] = {"query": "tea", "bank_id": "user:alice", **kwargs}
    with pytest.raises(ValidationError) as info:
        await brain.recall(arguments.pop("query"), arguments.pop("bank_id"), **arguments)
    assert info.value.code == code


async def test_authority_tiers_label_hits(make_brain: Any) -> None:
    authority = {"tiers": ["policy", "notes"], "banks": {"org:*": "policy", "user:*": "notes"}}
    async with make_brain(recall_authority=authority) as brain:
        await brain.retain("Expenses above 500 EUR need approval.", "org:finance")
        await brain.retain("I think expenses above 1000 EUR need approval.", "user:bob")
        result = await brain.recall("which expenses need approval?", banks=["org:finance", "user:bob"])
        tiers = {h.bank_id: h.authority_tier for h in result.hits}
        assert tiers == {"org:finance": "policy", "user:bob": "notes"}
        assert result.authority_context and "policy" in result.authority_context
