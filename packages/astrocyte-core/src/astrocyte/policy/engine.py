"""``PolicyEngine``: the one object the memory engine consults on every call.

It composes access control, the PII barrier, recall authority and limits, each built once from
``PolicyConfig``. Which permission each operation needs is the caller's choice; the engine uses
``retain -> write``, ``recall/reflect/bank_stats/list_banks -> read``, ``forget -> forget``,
``create_bank -> write`` and ``delete_bank -> admin``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from astrocyte.policy.access import AccessController
from astrocyte.policy.authority import AuthorityResolver
from astrocyte.policy.config import PolicyConfig
from astrocyte.policy.identity import context_principals
from astrocyte.policy.limits import RequestLimits
from astrocyte.policy.pii import PiiBarrier
from astrocyte.types import AstrocyteContext, MemoryHit


class PolicyEngine:
    """Identity, access control, PII barrier, recall authority and limits."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.access = AccessController(
            config.access_grants,
            enabled=config.access_control.enabled,
            cache_size=config.access_control.cache_size,
            owner_banks=config.access_control.owner_banks,
        )
        pii = config.barriers.pii
        self.pii = PiiBarrier(pii) if pii is not None and pii.enabled else None
        self.authority = AuthorityResolver(config.recall_authority)
        self.limits = RequestLimits(config.limits)

    @classmethod
    def from_config(cls, config: PolicyConfig) -> PolicyEngine:
        """Build from the validated policy sections of ``astrocyte.yaml``."""
        return cls(config)

    async def open(self) -> None:
        """Connect the limiter backend (Redis) when one is configured."""
        await self.limits.open()

    async def close(self) -> None:
        await self.limits.close()

    # -- access -----------------------------------------------------------------------------------

    def authorize(self, context: AstrocyteContext | None, bank_id: str, permission: str) -> None:
        """Allow or raise ``AccessDeniedError`` / ``UnauthenticatedError``; for anything but a write
        on a bank the caller cannot read, raise ``NotFoundError(code="bank_not_found")`` exactly as
        for an absent bank (use :func:`astrocyte.policy.access.bank_not_found` for those)."""
        self.access.authorize(context, bank_id, permission)

    def readable_banks(self, context: AstrocyteContext | None, bank_ids: Iterable[str]) -> list[str]:
        """The banks among ``bank_ids`` the caller may read, order preserved."""
        return self.access.readable(context, bank_ids)

    # -- PII --------------------------------------------------------------------------------------

    def screen(self, text: str) -> str:
        """Apply the PII barrier: redacted text, or ``PiiRejectedError`` naming the types only."""
        return self.pii.screen(text) if self.pii is not None else text

    def screen_fields(
        self, metadata: Mapping[str, Any], tags: tuple[str, ...]
    ) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        """The PII barrier over a retain's metadata (every string value, nested too) and tags."""
        if self.pii is None or not self.pii.enabled:
            return metadata, tags
        screened_tags = tuple(self.pii.screen(tag, "tags") for tag in tags)
        return (self.pii.screen_metadata(metadata) if metadata else metadata), screened_tags

    # -- limits -----------------------------------------------------------------------------------

    def check_sizes(
        self, content: str, metadata: Mapping[str, Any] | None, tags: Sequence[str] | None
    ) -> None:
        """``TooLargeError`` (content/metadata) or ``ValidationError`` (tags)."""
        self.limits.check_sizes(content, metadata, tags)

    async def acquire(
        self, context: AstrocyteContext | None, bank_id: str, operation: str, cost: int = 1
    ) -> None:
        """Count a call against the (principal, bank, operation) rate limit and daily quota.

        A service acting for a user is limited per (service, user) pair, so one noisy user cannot
        use up the service's whole allowance."""
        if not self.config.limits.rate:
            return
        principal, acting_for = context_principals(context)
        who = f"{principal}>{acting_for}" if acting_for else principal
        await self.limits.acquire(who, bank_id, operation, cost)

    # -- recall authority -------------------------------------------------------------------------

    def check_source(self, context: AstrocyteContext | None, source: str) -> None:
        """Refuse a writer-chosen ``source`` that would earn a tier it is not trusted with."""
        self.authority.check_source(context, source)

    def authority_tier(self, bank_id: str, source: str | None) -> str | None:
        return self.authority.tier(bank_id, source)

    def tier_rank(self, tier: str | None) -> int:
        """0 = highest; unknown or ``None`` ranks after every configured tier."""
        return self.authority.rank(tier)

    def authority_context(self, hits: Sequence[MemoryHit]) -> str | None:
        """Text block for prompts: the tier order then the hits grouped by tier (``None`` if unused)."""
        return self.authority.context(hits)
