"""Retain: validation before anything is written, idempotency, batching."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from astrocyte.brain import Astrocyte
from astrocyte.config import parse_config
from astrocyte.errors import AstrocyteError, ConfigError, TooLargeError, ValidationError
from astrocyte.types import RetainRequest, RetainResult
from fixtures.engine import store_config
from fixtures.openai_server import FakeOpenAIServer, Reply


async def assert_nothing_written(brain: Astrocyte) -> None:
    assert await brain.store.list_banks() == []


async def test_retain_stores_a_memory_that_recall_finds(brain: Astrocyte) -> None:
    result = await brain.retain("Alice prefers green tea in the morning.", "user:alice", tags=["drinks"])
    assert result.stored and result.memory_id and not result.deduplicated
    stats = await brain.bank_stats("user:alice")
    assert stats.memory_count == 1 and stats.chunk_count == 1
    recalled = await brain.recall("what tea does Alice like?", "user:alice")
    assert [h.memory_id for h in recalled.hits] == [result.memory_id]
    assert recalled.hits[0].tags == ["drinks"]


@pytest.mark.parametrize("bank_id", ["", "-starts-with-dash", "has space", "x" * 256, "slash/bank", "é"])
async def test_bad_bank_id_is_rejected_and_nothing_written(brain: Astrocyte, bank_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        await brain.retain("some fact", bank_id)
    assert info.value.code == "bank_id_invalid"
    await assert_nothing_written(brain)


@pytest.mark.parametrize("bank_id", ["a", "user:alice@example.com", "team.core_1-x", "9" * 255])
async def test_good_bank_ids_are_accepted(brain: Astrocyte, bank_id: str) -> None:
    assert (await brain.retain("some fact", bank_id)).stored


@pytest.mark.parametrize("content", ["", "   \n\t "])
async def test_empty_content_is_rejected_and_nothing_written(brain: Astrocyte, content: str) -> None:
    with pytest.raises(ValidationError) as info:
        await brain.retain(content, "user:alice")
    assert info.value.code == "content_empty"
    await assert_nothing_written(brain)


async def test_oversized_content_is_rejected_and_nothing_written(make_brain: Any) -> None:
    async with make_brain(limits={"max_content_bytes": 1000}) as brain:
        with pytest.raises(TooLargeError) as info:
            await brain.retain("x" * 1001, "user:alice")
        assert info.value.http_status == 413 and info.value.code
        await assert_nothing_written(brain)


async def test_idempotent_retain_writes_once(brain: Astrocyte) -> None:
    first = await brain.retain("Alice moved to Lisbon.", "user:alice", idempotency_key="evt-1")
    again = await brain.retain("Alice moved to Lisbon (again).", "user:alice", idempotency_key="evt-1")
    assert again.deduplicated and again.memory_id == first.memory_id and again.stored
    assert (await brain.bank_stats("user:alice")).memory_count == 1
    other_bank = await brain.retain("Alice moved to Lisbon.", "user:bob", idempotency_key="evt-1")
    assert not other_bank.deduplicated and other_bank.memory_id != first.memory_id


async def test_long_content_is_chunked_and_found_by_a_late_passage(make_brain: Any) -> None:
    async with make_brain(chunking={"max_chars": 200, "overlap_chars": 30}) as brain:
        filler = " ".join(f"Sentence {i} is about nothing in particular." for i in range(30))
        result = await brain.retain(filler + " The vault code is kept by Marguerite.", "kb")
        stats = await brain.bank_stats("kb")
        assert stats.memory_count == 1 and stats.chunk_count > 3
        hits = (await brain.recall("who keeps the vault code?", "kb")).hits
        assert hits[0].memory_id == result.memory_id and "Marguerite" in hits[0].text


async def test_retain_many_reports_each_item_and_stores_the_good_ones(brain: Astrocyte) -> None:
    outcomes = await brain.retain_many(
        [
            RetainRequest(content="Fact one about ravens.", bank_id="birds"),
            RetainRequest(content="", bank_id="birds"),
            RetainRequest(content="Fact two about crows.", bank_id="bad bank"),
            RetainRequest(content="Fact three about jays.", bank_id="birds", idempotency_key="k"),
            RetainRequest(content="Fact three, replayed.", bank_id="birds", idempotency_key="k"),
        ]
    )
    assert isinstance(outcomes[0], RetainResult) and outcomes[0].stored
    assert isinstance(outcomes[1], AstrocyteError) and outcomes[1].code == "content_empty"
    assert isinstance(outcomes[2], AstrocyteError) and outcomes[2].code == "bank_id_invalid"
    assert isinstance(outcomes[3], RetainResult) and not outcomes[3].deduplicated
    assert isinstance(outcomes[4], RetainResult) and outcomes[4].deduplicated
    assert outcomes[4].memory_id == outcomes[3].memory_id
    assert (await brain.bank_stats("birds")).memory_count == 2


def openai_embedder_config(fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path) -> dict[str, Any]:
    """An engine on ``store_kind`` embedding through the local OpenAI-compatible server."""
    return {
        **store_config(store_kind, tmp_path),
        "embedder": "openai",
        "embedder_config": {
            "base_url": fake_openai.base_url,
            "model": "e",
            "dimensions": fake_openai.dimensions,
        },
    }


async def test_retain_many_embeds_the_whole_batch_in_one_call(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    config = openai_embedder_config(fake_openai, store_kind, tmp_path)
    async with Astrocyte.from_dict(config) as brain:
        requests = [RetainRequest(content=f"Memory number {i}.", bank_id=f"b{i % 3}") for i in range(20)]
        outcomes = await brain.retain_many(requests)
        assert all(isinstance(o, RetainResult) and o.stored for o in outcomes)
        assert len(fake_openai.requests_to("embeddings")) == 1
        assert sorted(await brain.list_banks()) == ["b0", "b1", "b2"]


async def test_a_retried_idempotency_key_is_not_embedded_again(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    # Redeliveries and client retries must not pay for a second embedding of a stored memory.
    config = openai_embedder_config(fake_openai, store_kind, tmp_path)
    async with Astrocyte.from_dict(config) as brain:
        first = await brain.retain_many(
            [RetainRequest(content=f"Fact {i}.", bank_id="b", idempotency_key=f"k{i}") for i in range(3)]
        )
        retry = await brain.retain_many(
            [RetainRequest(content=f"Fact {i}.", bank_id="b", idempotency_key=f"k{i}") for i in range(4)]
        )
        embedded = [r.body["input"] for r in fake_openai.requests_to("embeddings") if r.body]
        assert embedded == [["Fact 0.", "Fact 1.", "Fact 2."], ["Fact 3."]]
        assert [(r.memory_id, r.deduplicated) for r in retry[:3]] == [(r.memory_id, True) for r in first]
        assert retry[3].deduplicated is False
        assert (await brain.bank_stats("b")).memory_count == 4


async def test_wrong_dimension_embedding_fails_the_batch_and_writes_nothing(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    config = openai_embedder_config(fake_openai, store_kind, tmp_path)
    fake_openai.queue("embeddings", Reply(dimensions=fake_openai.dimensions + 1), Reply(dimensions=16))
    async with Astrocyte.from_dict(config) as brain:
        with pytest.raises(ValidationError) as info:
            await brain.retain("a fact", "user:alice")
        assert info.value.code == "embedding_dimension_mismatch"
        outcomes = await brain.retain_many([RetainRequest(content=f"f{i}", bank_id="b") for i in range(3)])
        assert all(
            isinstance(o, ValidationError) and o.code == "embedding_dimension_mismatch" for o in outcomes
        )
        await assert_nothing_written(brain)


async def test_store_refuses_vectors_of_another_size_and_writes_nothing(
    store_kind: str, tmp_path: Path
) -> None:
    base = store_config(store_kind, tmp_path)
    async with Astrocyte.from_dict({**base, "embedder_config": {"dimensions": 64}}) as first:
        await first.retain("sixty-four dimensions", "bank")
        store = first.store if store_kind == "memory" else None
    second_config = parse_config({**base, "embedder_config": {"dimensions": 32}})
    second = Astrocyte(second_config, store=store) if store is not None else Astrocyte(second_config)
    async with second:
        with pytest.raises(ValidationError) as info:
            await second.retain("thirty-two dimensions", "bank")
        assert info.value.code == "embedding_dimension_mismatch"
        assert (await second.bank_stats("bank")).memory_count == 1


async def test_retain_keeps_metadata_time_and_source(brain: Astrocyte) -> None:
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    await brain.retain(
        "The deploy froze on Friday.", "ops", metadata={"ticket": "OPS-7"}, occurred_at=when, source="jira"
    )
    hit = (await brain.recall("deploy freeze", "ops")).hits[0]
    assert hit.metadata == {"ticket": "OPS-7"} and hit.occurred_at == when and hit.source == "jira"
    assert hit.retained_at is not None


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"tags": "not-a-list"}, "tags_invalid"),
        ({"tags": [""]}, "tags_invalid"),
        ({"metadata": {1: "x"}}, "metadata_invalid"),
        ({"idempotency_key": ""}, "idempotency_key_invalid"),
        ({"occurred_at": "yesterday"}, "occurred_at_invalid"),
    ],
)
async def test_malformed_fields_are_rejected(brain: Astrocyte, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as info:
        await brain.retain("a fact", "bank", **kwargs)
    assert info.value.code == code
    await assert_nothing_written(brain)


def test_a_bad_config_file_fails_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "astrocyte.yaml"
    path.write_text("store: memory\nstore_config:\n  max_memoriez: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Astrocyte.from_config(path)
    assert info.value.code == "config_invalid" and "max_memoriez" in info.value.message
