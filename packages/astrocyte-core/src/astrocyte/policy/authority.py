"""recall_authority: ordered tiers of trust, mapped from a hit's source or bank.

Tiers are listed highest first. A hit's tier comes from its ``source`` (first matching source glob),
else from its bank (first matching bank glob, in config order), else ``default_tier``. A tier's rank
is its index (0 = highest); a hit without a known tier ranks after every tier.

A memory's ``source`` is what its writer said, so a source tier is earned only by a writer the
operator trusts with that name (:meth:`AuthorityResolver.check_source`): the ingest source itself
(the sink writes ``source=<source id>`` with a context whose ``source`` is that id), a principal
listed in ``trusted_writers``, or in-process code that passes no context. Any other caller that
names a mapped source is refused (``source_not_trusted``) rather than given a forged badge.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from functools import lru_cache

from astrocyte.errors import AccessDeniedError
from astrocyte.policy.config import RecallAuthorityConfig
from astrocyte.policy.identity import context_principals
from astrocyte.types import AstrocyteContext, MemoryHit

_MAX_HIT_CHARS = 500
UNRANKED = "unranked"


class AuthorityResolver:
    """Maps hits to tiers and renders the ``authority_context`` text."""

    def __init__(self, config: RecallAuthorityConfig | None) -> None:
        self._config = config or RecallAuthorityConfig()
        self._ranks = {tier: i for i, tier in enumerate(self._config.tiers)}
        self._bank_rules = tuple(self._config.banks.items())
        self._source_rules = tuple(self._config.sources.items())
        self._cached_tier = lru_cache(maxsize=4096)(self._tier)

    @property
    def configured(self) -> bool:
        return bool(self._config.tiers)

    def _tier(self, bank_id: str, source: str | None) -> str | None:
        if not self.configured:
            return None
        if source is not None:
            for pattern, tier in self._source_rules:
                if fnmatch.fnmatchcase(source, pattern):
                    return tier
        for pattern, tier in self._bank_rules:
            if fnmatch.fnmatchcase(bank_id, pattern):
                return tier
        return self._config.default_tier

    def check_source(self, context: AstrocyteContext | None, source: str) -> None:
        """Refuse a retain whose ``source`` maps to a tier unless the writer is trusted with it."""
        if context is None or context.source == source or not self._source_rules:
            return
        if not any(fnmatch.fnmatchcase(source, pattern) for pattern, _ in self._source_rules):
            return
        principal, _ = context_principals(context)
        trusted = self._config.trusted_writers
        if principal is not None and any(fnmatch.fnmatchcase(principal, glob) for glob in trusted):
            return
        raise AccessDeniedError(
            f"source {source!r} earns a recall-authority tier and only its ingest source or a "
            "principal in recall_authority.trusted_writers may write it; drop the source field",
            code="source_not_trusted",
        )

    def tier(self, bank_id: str, source: str | None) -> str | None:
        """The tier of a memory from ``bank_id`` retained through ``source`` (``None`` if unmapped)."""
        return self._cached_tier(bank_id, source)

    def rank(self, tier: str | None) -> int:
        """0 for the highest tier; unknown or ``None`` ranks after every configured tier."""
        if tier is None:
            return len(self._ranks)
        return self._ranks.get(tier, len(self._ranks))

    def context(self, hits: Sequence[MemoryHit]) -> str | None:
        """A compact block a prompt can use: the tier order, then the hits grouped by tier.

        ``None`` when no tiers are configured or there are no hits.
        """
        if not self.configured or not hits:
            return None
        groups: dict[str, list[MemoryHit]] = {}
        for hit in hits:
            tier = hit.authority_tier if hit.authority_tier in self._ranks else UNRANKED
            groups.setdefault(tier, []).append(hit)
        lines = ["Higher tiers override lower ones: " + " > ".join(self._config.tiers)]
        for tier in sorted(groups, key=self.rank):
            lines.append(f"[{tier}]")
            lines.extend(f"- {_one_line(hit.text)}" for hit in groups[tier])
        return "\n".join(lines)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_HIT_CHARS else flat[: _MAX_HIT_CHARS - 1] + "…"
