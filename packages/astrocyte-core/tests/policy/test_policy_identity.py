"""Principals are parsed strictly; grant patterns are checked at start-up."""

from __future__ import annotations

import pytest
from astrocyte.errors import ValidationError
from astrocyte.policy.config import AccessGrant
from astrocyte.policy.identity import Principal, context_principals, parse_principal
from astrocyte.types import AstrocyteContext
from pydantic import ValidationError as PydanticValidationError


@pytest.mark.parametrize(
    ("value", "kind", "ident"),
    [
        ("user:alice", "user", "alice"),
        ("agent:planner-7", "agent", "planner-7"),
        ("service:ingest.kafka", "service", "ingest.kafka"),
        ("user:alice@example.com", "user", "alice@example.com"),
        ("user:org:team:bob", "user", "org:team:bob"),
    ],
)
def test_parses_the_three_principal_kinds(value: str, kind: str, ident: str) -> None:
    assert parse_principal(value) == Principal(kind, ident)
    assert str(parse_principal(value)) == value


@pytest.mark.parametrize(
    "value",
    ["alice", "admin:root", "user:", "user: alice", "user:*", "user:a?b", "USER:alice", "user:" + "a" * 256],
)
def test_rejects_malformed_principals_with_a_stable_code(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_principal(value)
    assert info.value.code == "principal_invalid"


def test_acting_for_without_a_principal_is_invalid() -> None:
    with pytest.raises(ValidationError) as info:
        context_principals(AstrocyteContext(acting_for="user:alice"))
    assert info.value.code == "principal_invalid"


@pytest.mark.parametrize("pattern", ["*", "user:*", "service:ingest-*", "user:alice", "*:bot-?"])
def test_accepts_principal_globs_in_grants(pattern: str) -> None:
    AccessGrant(bank_id="*", principal=pattern, permissions=["read"])


@pytest.mark.parametrize("pattern", ["usr:alice", "team:*", "alice", "user alice"])
def test_rejects_grant_principals_that_could_never_match(pattern: str) -> None:
    with pytest.raises(PydanticValidationError, match="principal"):
        AccessGrant(bank_id="*", principal=pattern, permissions=["read"])
