"""The policy sections of astrocyte.yaml: unknown keys and bad values fail at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from astrocyte.policy.config import PolicyConfig
from pydantic import ValidationError as PydanticValidationError


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"access_control": {"enabeld": True}}, "access_control.enabeld"),
        ({"access_grants": [{"bank_id": "*", "principal": "*", "permissions": ["read"], "x": 1}]}, "x"),
        ({"access_grants": [{"bank_id": "*", "principal": "*", "permissions": ["delete"]}]}, "permissions"),
        ({"access_grants": [{"bank_id": "*", "principal": "*", "permissions": []}]}, "permissions"),
        ({"barriers": {"pii": {"action": "mask"}}}, "barriers.pii.action"),
        ({"barriers": {"pii": {"type_overrides": {"email": "drop"}}}}, "type_overrides"),
        ({"limits": {"max_tags": -1}}, "limits.max_tags"),
        ({"limits": {"rate": {"retain": {"per_second": 0}}}}, "per_second"),
        ({"limits": {"rate": {"retain": {"per_minute": 5}}}}, "per_minute"),
        ({"recall_authority": {"tiers": ["a"], "extra": 1}}, "recall_authority.extra"),
    ],
)
def test_invalid_policy_config_names_the_offending_key(mapping: dict[str, Any], path: str) -> None:
    with pytest.raises(PydanticValidationError) as info:
        PolicyConfig.model_validate(mapping)
    assert path.split(".")[-1] in str(info.value)


def test_an_empty_policy_config_is_permissive() -> None:
    config = PolicyConfig.model_validate({})
    assert config.access_control.enabled is False
    assert config.barriers.pii is None
    assert config.recall_authority is None
    assert config.limits.rate == {}
