"""Config models for the policy sections of ``astrocyte.yaml``.

Every model forbids unknown keys so a typo is a start-up error naming the key. Every key is
documented in ``docs/policy.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Permission = Literal["read", "write", "forget", "admin", "*"]
PiiAction = Literal["redact", "reject", "warn"]

#: Every PII type the barrier knows, in the order it resolves overlapping detections.
PII_TYPES: tuple[str, ...] = (
    "secret",
    "payment_card",
    "iban",
    "us_ssn",
    "email",
    "ip_address",
    "phone",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccessControlConfig(_Strict):
    enabled: bool = False
    #: Each principal holds every permission on the bank whose id is the principal itself
    #: (``user:alice`` owns bank ``user:alice``), on top of its grants.
    owner_banks: bool = False
    #: How many principals' compiled grant sets to keep (LRU). Bounded so a flood of distinct
    #: principals cannot grow memory.
    cache_size: int = Field(default=4096, ge=16)


class AccessGrant(_Strict):
    bank_id: str = Field(min_length=1)  # glob (fnmatch, case-sensitive)
    principal: str = Field(min_length=1)  # glob over "user:<id>" / "agent:<id>" / "service:<id>"
    permissions: list[Permission] = Field(min_length=1)

    @field_validator("principal")
    @classmethod
    def _principal_shape(cls, value: str) -> str:
        from astrocyte.errors import ValidationError
        from astrocyte.policy.identity import validate_principal_pattern

        try:
            validate_principal_pattern(value)
        except ValidationError as exc:  # pydantic reports ValueError with the field's path
            raise ValueError(exc.message) from None
        return value


class PiiBarrierConfig(_Strict):
    enabled: bool = True
    action: PiiAction = "redact"
    type_overrides: dict[str, PiiAction] = Field(default_factory=dict)
    #: Which detectors run; default all of ``PII_TYPES``.
    detectors: list[str] = Field(default_factory=lambda: list(PII_TYPES))
    #: Regions (ISO 3166 alpha-2) whose national phone formats are recognised; numbers written
    #: with a leading ``+`` are recognised for every country.
    phone_regions: list[str] = Field(default_factory=lambda: ["US"])

    @field_validator("type_overrides")
    @classmethod
    def _known_override_types(cls, value: dict[str, PiiAction]) -> dict[str, PiiAction]:
        _check_pii_types(value.keys(), "type_overrides")
        return value

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        _check_pii_types(value, "detectors")
        return value


def _check_pii_types(names: object, where: str) -> None:
    unknown = sorted(set(names) - set(PII_TYPES))  # type: ignore[call-overload]
    if unknown:
        raise ValueError(f"unknown PII type(s) in {where}: {unknown}; known: {list(PII_TYPES)}")


class BarriersConfig(_Strict):
    pii: PiiBarrierConfig | None = None


class RecallAuthorityConfig(_Strict):
    tiers: list[str] = Field(default_factory=list)  # highest first
    banks: dict[str, str] = Field(default_factory=dict)  # bank glob -> tier (first match in order)
    sources: dict[str, str] = Field(default_factory=dict)  # source id glob -> tier (wins over banks)
    default_tier: str | None = None
    #: Principal globs (besides the ingest source itself) whose ``source`` field earns a source tier,
    #: e.g. a trusted service that syncs the handbook. Anyone else naming a mapped source is refused.
    trusted_writers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tiers_known(self) -> RecallAuthorityConfig:
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError("recall_authority.tiers contains a duplicate tier")
        known = set(self.tiers)
        used = [*self.banks.values(), *self.sources.values()]
        if self.default_tier is not None:
            used.append(self.default_tier)
        unknown = sorted(set(used) - known)
        if unknown:
            raise ValueError(f"recall_authority maps to tier(s) not listed in tiers: {unknown}")
        return self


class RateLimitConfig(_Strict):
    per_second: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)  # default: max(1, ceil(per_second))
    daily_quota: int | None = Field(default=None, ge=0)


class LimitsConfig(_Strict):
    max_content_bytes: int = Field(default=100_000, ge=1)
    max_metadata_bytes: int = Field(default=16_384, ge=2)
    max_tags: int = Field(default=32, ge=0)
    max_tag_length: int = Field(default=256, ge=1)
    #: operation ("retain", "recall", "reflect", "forget", ... or "*") -> limit, applied per
    #: (principal, bank, operation). An operation's own entry replaces the "*" entry.
    rate: dict[str, RateLimitConfig] = Field(default_factory=dict)
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    redis_key_prefix: str = "astrocyte:limits:"
    max_tracked_keys: int = Field(default=50_000, ge=1)
    #: When the limiter's backend (Redis) is unreachable: false -> 503 provider_unavailable,
    #: true -> let the call through.
    fail_open: bool = False

    @model_validator(mode="after")
    def _redis_needs_url(self) -> LimitsConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("limits.backend is 'redis' but limits.redis_url is not set")
        return self


class PolicyConfig(_Strict):
    access_control: AccessControlConfig = Field(default_factory=AccessControlConfig)
    access_grants: list[AccessGrant] = Field(default_factory=list)
    barriers: BarriersConfig = Field(default_factory=BarriersConfig)
    recall_authority: RecallAuthorityConfig | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
