"""Reflect: extractive without an LLM, the LLM with a tier-ordered prompt, fallback when it fails."""

from __future__ import annotations

from pathlib import Path

from astrocyte.brain import Astrocyte
from astrocyte.reflect import NO_MEMORIES_ANSWER
from fixtures.engine import store_config
from fixtures.openai_server import FakeOpenAIServer, Reply


async def test_reflect_without_llm_answers_extractively(brain: Astrocyte) -> None:
    await brain.retain("Alice prefers green tea. She visited Porto last spring.", "user:alice")
    await brain.retain("Bob likes espresso.", "user:alice")
    result = await brain.reflect("what tea does Alice prefer?", "user:alice")
    assert result.answer.startswith("Alice prefers green tea.")
    assert "Porto" not in result.answer.split(" ")[:4]
    assert 0.0 < result.confidence <= 1.0
    assert result.sources and result.sources[0].text.startswith("Alice prefers green tea")


async def test_reflect_with_nothing_relevant_says_so_with_zero_confidence(brain: Astrocyte) -> None:
    await brain.create_bank("empty")
    result = await brain.reflect("anything?", "empty")
    assert result.answer == NO_MEMORIES_ANSWER and result.confidence == 0.0 and result.sources == []


async def test_reflect_can_leave_out_sources(brain: Astrocyte) -> None:
    await brain.retain("Alice prefers green tea.", "user:alice")
    assert (await brain.reflect("tea?", "user:alice", include_sources=False)).sources == []


def llm_config(
    server: FakeOpenAIServer, store_kind: str, tmp_path: Path, **extra: object
) -> dict[str, object]:
    return {
        **store_config(store_kind, tmp_path),
        "llm": "openai",
        "llm_config": {"base_url": server.base_url, "model": "gpt-4o-mini", "max_retries": 0, "timeout": 2},
        **extra,
    }


async def test_reflect_with_llm_prompts_with_memories_higher_tier_first(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    authority = {"tiers": ["policy", "notes"], "banks": {"org:*": "policy", "user:*": "notes"}}
    fake_openai.chat_answer = "Approval is needed above 500 EUR."
    async with Astrocyte.from_dict(
        llm_config(fake_openai, store_kind, tmp_path, recall_authority=authority)
    ) as brain:
        await brain.retain("I heard expenses above 1000 EUR need approval.", "user:bob")
        await brain.retain("Expenses above 500 EUR need approval.", "org:finance")
        result = await brain.reflect(
            "which expenses need approval?", banks=["user:bob", "org:finance"], max_tokens=50
        )
    assert result.answer == "Approval is needed above 500 EUR."
    assert [s.bank_id for s in result.sources] == ["org:finance", "user:bob"]
    (request,) = fake_openai.requests_to("chat/completions")
    system, user = (m["content"] for m in request.body["messages"])
    assert "prefer" in system and "authoritative" in system
    assert user.index("500 EUR") < user.index("1000 EUR")
    assert 'tier="policy"' in user or "tier=policy" in user
    assert user.rstrip().endswith("Question: which expenses need approval?")
    assert request.body["max_tokens"] == 50


async def test_reflect_falls_back_to_extractive_when_the_llm_is_down(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    fake_openai.queue("chat/completions", Reply(503))
    async with Astrocyte.from_dict(llm_config(fake_openai, store_kind, tmp_path)) as brain:
        await brain.retain("Alice prefers green tea.", "user:alice")
        result = await brain.reflect("what does Alice prefer?", "user:alice")
    assert result.answer == "Alice prefers green tea."


async def test_health_reports_store_embedder_and_llm(
    fake_openai: FakeOpenAIServer, store_kind: str, tmp_path: Path
) -> None:
    async with Astrocyte.from_dict(llm_config(fake_openai, store_kind, tmp_path)) as brain:
        report = await brain.health()
    assert report.healthy
    assert [c.name for c in report.components] == ["store", "embedder", "llm"]


async def test_health_is_unhealthy_when_the_llm_is_unreachable(store_kind: str, tmp_path: Path) -> None:
    config = {
        **store_config(store_kind, tmp_path),
        "llm": "openai",
        "llm_config": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
    }
    async with Astrocyte.from_dict(config) as brain:
        report = await brain.health()
    assert not report.healthy
    assert {c.name: c.healthy for c in report.components} == {"store": True, "embedder": True, "llm": False}
