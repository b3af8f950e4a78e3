"""Grants, default deny, acting_for intersection, and denials that reveal nothing."""

from __future__ import annotations

from typing import Any

import pytest
from astrocyte.errors import AccessDeniedError, NotFoundError, UnauthenticatedError
from astrocyte.policy.access import bank_not_found
from astrocyte.policy.config import PolicyConfig
from astrocyte.policy.engine import PolicyEngine
from astrocyte.types import AstrocyteContext

ALICE = AstrocyteContext(principal="user:alice")
BOB = AstrocyteContext(principal="user:bob")


def engine(*grants: dict[str, Any], enabled: bool = True) -> PolicyEngine:
    return PolicyEngine.from_config(
        PolicyConfig.model_validate({"access_control": {"enabled": enabled}, "access_grants": list(grants)})
    )


def test_star_permission_allows_every_operation() -> None:
    policy = engine({"bank_id": "user:alice", "principal": "user:alice", "permissions": ["*"]})
    for permission in ("read", "write", "forget", "admin"):
        policy.authorize(ALICE, "user:alice", permission)


def test_admin_implies_read_write_and_forget() -> None:
    policy = engine({"bank_id": "team.*", "principal": "user:alice", "permissions": ["admin"]})
    for permission in ("read", "write", "forget", "admin"):
        policy.authorize(ALICE, "team.docs", permission)


def test_access_control_off_allows_everything_even_without_a_principal() -> None:
    policy = engine(enabled=False)
    policy.authorize(None, "any-bank", "admin")
    assert policy.readable_banks(None, ["a", "b"]) == ["a", "b"]


def test_access_control_on_denies_what_no_grant_allows() -> None:
    policy = engine({"bank_id": "shared", "principal": "user:alice", "permissions": ["read"]})
    with pytest.raises(AccessDeniedError):
        policy.authorize(BOB, "shared", "write")
    with pytest.raises(NotFoundError):
        policy.authorize(BOB, "shared", "read")


def test_no_principal_is_unauthenticated_when_access_control_is_on() -> None:
    policy = engine({"bank_id": "*", "principal": "*", "permissions": ["read"]})
    with pytest.raises(UnauthenticatedError) as info:
        policy.authorize(None, "shared", "read")
    assert info.value.code == "principal_required"
    assert policy.readable_banks(None, ["shared"]) == []


@pytest.mark.parametrize("permission", ["read", "forget", "admin"])
def test_denied_access_to_an_unreadable_bank_looks_exactly_like_an_absent_bank(permission: str) -> None:
    policy = engine({"bank_id": "user:alice", "principal": "user:alice", "permissions": ["*"]})
    with pytest.raises(NotFoundError) as denied:
        policy.authorize(BOB, "user:alice", permission)
    absent = bank_not_found("user:alice")
    assert type(denied.value) is type(absent)
    assert (denied.value.code, denied.value.message, denied.value.http_status, denied.value.details) == (
        absent.code,
        absent.message,
        absent.http_status,
        absent.details,
    )
    assert denied.value.to_dict() == absent.to_dict()
    assert "bob" not in str(denied.value)


def test_write_to_a_readable_bank_without_write_is_access_denied() -> None:
    policy = engine({"bank_id": "policies", "principal": "user:*", "permissions": ["read"]})
    with pytest.raises(AccessDeniedError) as info:
        policy.authorize(ALICE, "policies", "write")
    assert info.value.code == "access_denied"
    assert info.value.http_status == 403


def test_write_denial_does_not_depend_on_whether_the_bank_exists() -> None:
    policy = engine({"bank_id": "user:alice", "principal": "user:alice", "permissions": ["*"]})
    messages = []
    for bank in ("user:alice-secret", "never-created"):
        with pytest.raises(AccessDeniedError) as info:
            policy.authorize(BOB, bank, "write")
        messages.append(info.value.message.replace(bank, "<bank>"))
    assert messages[0] == messages[1]


def test_service_acting_for_a_user_gets_the_intersection_of_both() -> None:
    policy = engine(
        {"bank_id": "*", "principal": "service:gateway", "permissions": ["read", "write"]},
        {"bank_id": "user:alice", "principal": "user:alice", "permissions": ["*"]},
    )
    on_behalf = AstrocyteContext(principal="service:gateway", acting_for="user:alice")
    policy.authorize(on_behalf, "user:alice", "read")
    policy.authorize(on_behalf, "user:alice", "write")
    with pytest.raises(AccessDeniedError):
        policy.authorize(on_behalf, "user:alice", "forget")  # the user may, the service may not
    with pytest.raises(NotFoundError):
        policy.authorize(on_behalf, "user:bob", "read")  # the service may, the user may not
    assert policy.readable_banks(on_behalf, ["user:alice", "user:bob"]) == ["user:alice"]


def test_bank_and_principal_globs_match_case_sensitively() -> None:
    policy = engine({"bank_id": "team-[ab].*", "principal": "agent:planner-?", "permissions": ["read"]})
    planner = AstrocyteContext(principal="agent:planner-1")
    policy.authorize(planner, "team-a.notes", "read")
    for bank in ("team-c.notes", "TEAM-a.notes"):
        with pytest.raises(NotFoundError):
            policy.authorize(planner, bank, "read")
    with pytest.raises(NotFoundError):
        policy.authorize(AstrocyteContext(principal="agent:planner-10"), "team-a.notes", "read")


def test_permissions_from_several_grants_add_up() -> None:
    policy = engine(
        {"bank_id": "*", "principal": "user:*", "permissions": ["read"]},
        {"bank_id": "user:alice", "principal": "user:alice", "permissions": ["write"]},
    )
    policy.authorize(ALICE, "user:alice", "write")
    policy.authorize(ALICE, "user:alice", "read")
    with pytest.raises(AccessDeniedError):
        policy.authorize(ALICE, "user:alice", "forget")


def test_grant_cache_stays_bounded_with_many_principals() -> None:
    policy = PolicyEngine.from_config(
        PolicyConfig.model_validate(
            {
                "access_control": {"enabled": True, "cache_size": 64},
                "access_grants": [{"bank_id": "*", "principal": "user:*", "permissions": ["read"]}],
            }
        )
    )
    for i in range(5_000):
        policy.authorize(AstrocyteContext(principal=f"user:u{i}"), "shared", "read")
    assert policy.access._for_principal.cache_info().currsize <= 64


def test_owner_banks_give_each_principal_its_own_bank_only() -> None:
    policy = PolicyEngine.from_config(
        PolicyConfig.model_validate({"access_control": {"enabled": True, "owner_banks": True}})
    )
    for permission in ("read", "write", "forget", "admin"):
        policy.authorize(ALICE, "user:alice", permission)
    with pytest.raises(NotFoundError):
        policy.authorize(BOB, "user:alice", "read")
    with pytest.raises(AccessDeniedError):
        policy.authorize(BOB, "user:alice", "write")
    service_for_alice = AstrocyteContext(principal="service:chat", acting_for="user:alice")
    policy.authorize(service_for_alice, "user:alice", "write")
    with pytest.raises(AccessDeniedError):
        policy.authorize(service_for_alice, "user:bob", "write")
