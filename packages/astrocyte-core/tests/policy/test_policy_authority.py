"""recall_authority: tiers from source or bank, ranks, and the prompt-ready context text."""

from __future__ import annotations

from typing import Any

import pytest
from astrocyte.policy.config import PolicyConfig, RecallAuthorityConfig
from astrocyte.policy.engine import PolicyEngine
from astrocyte.types import MemoryHit
from pydantic import ValidationError as PydanticValidationError

AUTHORITY = {
    "tiers": ["policy", "verified", "user-notes"],
    "banks": {"policy.*": "policy", "kb-verified": "verified", "kb-*": "user-notes"},
    "sources": {"github-handbook": "policy", "crm-*": "verified"},
    "default_tier": "user-notes",
}


def engine(authority: dict[str, Any] | None = AUTHORITY) -> PolicyEngine:
    return PolicyEngine.from_config(PolicyConfig.model_validate({"recall_authority": authority}))


def hit(text: str, tier: str | None, bank: str = "kb-x") -> MemoryHit:
    return MemoryHit(memory_id=text, bank_id=bank, text=text, score=1.0, authority_tier=tier)


def test_tiers_rank_in_configured_order_and_unknown_ranks_last() -> None:
    policy = engine()
    assert [policy.tier_rank(t) for t in ("policy", "verified", "user-notes")] == [0, 1, 2]
    assert policy.tier_rank(None) == 3
    assert policy.tier_rank("rumours") == 3


def test_bank_globs_map_in_config_order() -> None:
    policy = engine()
    assert policy.authority_tier("policy.security", None) == "policy"
    assert policy.authority_tier("kb-verified", None) == "verified"  # listed before the kb-* glob
    assert policy.authority_tier("kb-scratch", None) == "user-notes"
    assert policy.authority_tier("elsewhere", None) == "user-notes"  # default tier


def test_source_mapping_wins_over_bank_mapping() -> None:
    policy = engine()
    assert policy.authority_tier("kb-scratch", "github-handbook") == "policy"
    assert policy.authority_tier("kb-scratch", "crm-salesforce") == "verified"
    assert policy.authority_tier("kb-scratch", "unknown-source") == "user-notes"


def test_without_recall_authority_there_are_no_tiers_and_no_context() -> None:
    policy = engine(None)
    assert policy.authority_tier("policy.security", "github-handbook") is None
    assert policy.tier_rank(None) == 0
    assert policy.authority_context([hit("a", None)]) is None


def test_authority_context_groups_hits_by_tier_highest_first() -> None:
    policy = engine()
    hits = [
        hit("Lunch is at noon.", "user-notes"),
        hit("Refunds need  a\nreceipt.", "policy"),
        hit("Lunch is at 12:30.", "verified"),
        hit("Stray note.", None),
    ]
    assert policy.authority_context(hits) == "\n".join(
        [
            "Higher tiers override lower ones: policy > verified > user-notes",
            "[policy]",
            "- Refunds need a receipt.",
            "[verified]",
            "- Lunch is at 12:30.",
            "[user-notes]",
            "- Lunch is at noon.",
            "[unranked]",
            "- Stray note.",
        ]
    )
    assert policy.authority_context([]) is None


def test_long_hits_are_shortened_in_the_context() -> None:
    text = engine().authority_context([hit("x" * 2_000, "policy")])
    assert text is not None and len(text.splitlines()[-1]) <= 502


@pytest.mark.parametrize(
    "bad",
    [
        {"tiers": ["a", "a"]},
        {"tiers": ["a"], "banks": {"*": "b"}},
        {"tiers": ["a"], "sources": {"s": "b"}},
        {"tiers": ["a"], "default_tier": "b"},
    ],
)
def test_tiers_must_be_listed_once_and_mapped_tiers_must_exist(bad: dict[str, Any]) -> None:
    with pytest.raises(PydanticValidationError):
        RecallAuthorityConfig.model_validate(bad)


def test_a_mapped_source_is_taken_only_from_a_trusted_writer() -> None:
    from astrocyte.errors import AccessDeniedError
    from astrocyte.types import AstrocyteContext

    policy = engine({**AUTHORITY, "trusted_writers": ["service:handbook-*"]})
    with pytest.raises(AccessDeniedError) as refused:
        policy.check_source(AstrocyteContext(principal="user:bob"), "github-handbook")
    assert refused.value.code == "source_not_trusted"
    policy.check_source(AstrocyteContext(principal="user:bob"), "bobs-notes")  # unmapped: a label
    policy.check_source(AstrocyteContext(principal="service:handbook-sync"), "github-handbook")
    policy.check_source(
        AstrocyteContext(principal="service:github", source="github-handbook"), "github-handbook"
    )
    policy.check_source(None, "github-handbook")  # in-process code without a context
