"""Config models for the policy sections of ``astrocyte.yaml``.

Every model forbids unknown keys so a typo is a start-up error naming the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Permission = Literal["read", "write", "forget", "admin", "*"]
PiiAction = Literal["redact", "reject", "warn"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccessControlConfig(_Strict):
    enabled: bool = False


class AccessGrant(_Strict):
    bank_id: str  # glob
    principal: str  # glob
    permissions: list[Permission]


class PiiBarrierConfig(_Strict):
    enabled: bool = True
    action: PiiAction = "redact"
    type_overrides: dict[str, PiiAction] = Field(default_factory=dict)


class BarriersConfig(_Strict):
    pii: PiiBarrierConfig | None = None


class RecallAuthorityConfig(_Strict):
    tiers: list[str] = Field(default_factory=list)  # highest first
    banks: dict[str, str] = Field(default_factory=dict)  # bank glob -> tier
    sources: dict[str, str] = Field(default_factory=dict)  # source id -> tier
    default_tier: str | None = None


class RateLimitConfig(_Strict):
    per_second: float | None = None
    burst: int | None = None
    daily_quota: int | None = None


class LimitsConfig(_Strict):
    max_content_bytes: int = 100_000
    max_metadata_bytes: int = 16_384
    max_tags: int = 32
    rate: dict[str, RateLimitConfig] = Field(default_factory=dict)  # operation ("retain", "*") -> limit
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    max_tracked_keys: int = 50_000


class PolicyConfig(_Strict):
    access_control: AccessControlConfig = Field(default_factory=AccessControlConfig)
    access_grants: list[AccessGrant] = Field(default_factory=list)
    barriers: BarriersConfig = Field(default_factory=BarriersConfig)
    recall_authority: RecallAuthorityConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
