"""Forget selectors, bank lifecycle, access control through the policy engine, and metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from astrocyte import brain as brain_module
from astrocyte.brain import Astrocyte
from astrocyte.errors import AccessDeniedError, NotFoundError, PiiRejectedError, ValidationError
from astrocyte.types import AstrocyteContext
from prometheus_client import REGISTRY

ALICE = AstrocyteContext(principal="user:alice")
BOB = AstrocyteContext(principal="user:bob")


async def test_forget_needs_a_selector(brain: Astrocyte) -> None:
    await brain.retain("a fact", "bank")
    with pytest.raises(ValidationError) as info:
        await brain.forget("bank")
    assert info.value.code == "forget_selector_required"
    assert (await brain.bank_stats("bank")).memory_count == 1


async def test_forget_scope_all_must_stand_alone(brain: Astrocyte) -> None:
    await brain.retain("a fact", "bank", tags=["t"])
    with pytest.raises(ValidationError) as info:
        await brain.forget("bank", scope="all", tags=["t"])
    assert info.value.code == "forget_selector_conflict"
    assert (await brain.forget("bank", scope="all")).deleted_count == 1
    assert (await brain.bank_stats("bank")).memory_count == 0


async def test_forget_by_ids_tags_and_time(brain: Astrocyte) -> None:
    first = await brain.retain("one", "bank", tags=["a"])
    await brain.retain("two", "bank", tags=["a", "b"])
    await brain.retain("three", "bank", tags=["c"])
    assert (await brain.forget("bank", memory_ids=[first.memory_id])).deleted_count == 1
    assert (await brain.forget("bank", tags=["a"])).deleted_count == 1
    future = datetime.now(UTC) + timedelta(minutes=1)
    assert (await brain.forget("bank", before=future)).deleted_count == 1
    assert (await brain.bank_stats("bank")).memory_count == 0


async def test_forget_in_an_absent_bank_is_not_found(brain: Astrocyte) -> None:
    with pytest.raises(NotFoundError):
        await brain.forget("ghost", scope="all")


async def test_bank_lifecycle(brain: Astrocyte) -> None:
    created = await brain.create_bank("team:core")
    assert created.bank_id == "team:core" and created.created_at is not None
    assert (await brain.create_bank("team:core")).created_at is None
    await brain.retain("fact", "team:core")
    await brain.retain("fact", "team:other")
    assert sorted(await brain.list_banks()) == ["team:core", "team:other"]
    assert await brain.delete_bank("team:core") == 1
    assert await brain.list_banks() == ["team:other"]
    for call in (
        brain.bank_stats("team:core"),
        brain.delete_bank("team:core"),
        brain.recall("f", "team:core"),
    ):
        with pytest.raises(NotFoundError) as info:
            await call
        assert info.value.code == "bank_not_found"


async def test_access_control_filters_and_hides_banks(make_brain: Any) -> None:
    grants = [
        {"bank_id": "user:{alice,bob}", "principal": "user:alice", "permissions": ["*"]},
        {"bank_id": "user:alice", "principal": "user:alice", "permissions": ["*"]},
        {"bank_id": "shared", "principal": "user:*", "permissions": ["read"]},
        {"bank_id": "shared", "principal": "user:alice", "permissions": ["write"]},
    ]
    async with make_brain(access_control={"enabled": True}, access_grants=grants[1:]) as brain:
        await brain.retain("Alice's secret plan.", "user:alice", context=ALICE)
        await brain.retain("Shared note.", "shared", context=ALICE)
        with pytest.raises(AccessDeniedError):
            await brain.retain("Bob writes.", "shared", context=BOB)
        assert sorted(await brain.list_banks(context=ALICE)) == ["shared", "user:alice"]
        assert await brain.list_banks(context=BOB) == ["shared"]
        with pytest.raises(NotFoundError) as hidden:
            await brain.recall("plan", "user:alice", context=BOB)
        with pytest.raises(NotFoundError) as absent:
            await brain.recall("plan", "user:carol", context=ALICE)
        assert hidden.value.message.replace("alice", "X") == absent.value.message.replace("carol", "X")
        assert (await brain.recall("note", "shared", context=BOB)).hits


async def test_a_bank_another_replica_deleted_is_not_found_here_soon_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two engines on one SQLite file stand for two gateway replicas. The bank-exists cache only
    # saves lookups for a short while, so a deletion elsewhere becomes bank_not_found here.
    monkeypatch.setattr(brain_module, "_KNOWN_BANKS_SECONDS", 0.2)
    config = {"store": "sqlite", "store_config": {"path": str(tmp_path / "shared.db")}}
    async with Astrocyte.from_dict(config) as here, Astrocyte.from_dict(config) as there:
        await here.retain("a fact about owls", "shared-bank")
        assert (await here.recall("owls", "shared-bank")).hits
        assert await there.delete_bank("shared-bank") == 1
        await asyncio.sleep(0.3)
        with pytest.raises(NotFoundError):
            await here.recall("owls", "shared-bank")


async def test_pii_barrier_redacts_before_storing(make_brain: Any) -> None:
    async with make_brain(
        barriers={"pii": {"action": "redact", "type_overrides": {"payment_card": "reject"}}}
    ) as brain:
        await brain.retain("Reach Alice at alice@example.com about the trip.", "user:alice")
        hit = (await brain.recall("trip", "user:alice")).hits[0]
        assert "alice@example.com" not in hit.text and "trip" in hit.text
        with pytest.raises(PiiRejectedError):
            await brain.retain("Card 4111 1111 1111 1111 on file.", "user:alice")
        assert (await brain.bank_stats("user:alice")).memory_count == 1


async def test_pii_barrier_screens_metadata_values_and_tags_too(make_brain: Any) -> None:
    async with make_brain(
        barriers={"pii": {"action": "redact", "type_overrides": {"payment_card": "reject"}}}
    ) as brain:
        metadata = {
            "customer": {"email": "alice@example.com", "ids": ["ok", "+1-415-555-2671"]},
            "count": 3,
            "note": "plain",
        }
        await brain.retain("Trip notes.", "user:alice", metadata=metadata, tags=["owner:alice@example.com"])
        hit = (await brain.recall("trip", "user:alice")).hits[0]
        assert hit.metadata == {
            "customer": {"email": "[REDACTED:email]", "ids": ["ok", "[REDACTED:phone]"]},
            "count": 3,
            "note": "plain",
        }
        assert list(hit.tags) == ["owner:[REDACTED:email]"]
        with pytest.raises(PiiRejectedError) as refused:
            await brain.retain("Billing.", "user:alice", metadata={"card": "4111 1111 1111 1111"})
        assert refused.value.details == {"types": ["payment_card"], "field": "metadata"}
        assert "4111" not in refused.value.message
        with pytest.raises(PiiRejectedError):
            await brain.retain("Billing.", "user:alice", tags=["4111 1111 1111 1111"])
        assert (await brain.bank_stats("user:alice")).memory_count == 1


async def test_operations_are_counted_in_prometheus(brain: Astrocyte) -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "astrocyte_operations_total", {"operation": "retain", "outcome": outcome}
        )
        return value or 0.0

    ok, invalid = count("ok"), count("content_empty")
    await brain.retain("fact", "bank")
    with pytest.raises(ValidationError):
        await brain.retain(" ", "bank")
    assert count("ok") == ok + 1 and count("content_empty") == invalid + 1


def test_several_engines_share_the_metrics() -> None:
    Astrocyte.from_dict({"store": "memory"})
    Astrocyte.from_dict({"store": "memory"})
