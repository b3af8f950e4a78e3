"""Request limits: sizes of what is retained, and per (principal, bank, operation) rates and quotas.

Rate and quota state lives behind :class:`~astrocyte.policy.limiter.LimiterState` (in-process or
Redis); see :mod:`astrocyte.policy.limiter` for the reusable primitive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from astrocyte.errors import RateLimitedError, TooLargeError, ValidationError
from astrocyte.policy.config import LimitsConfig, RateLimitConfig
from astrocyte.policy.limiter import RateLimiter, make_limiter

ANONYMOUS = "-"  # not a valid principal, so it cannot collide with one


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """Size of metadata as compact UTF-8 JSON (what a store keeps)."""
    encoded = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(encoded.encode("utf-8"))


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


class RequestLimits:
    """Size checks and rate/quota enforcement configured by the ``limits`` section."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self.limiter: RateLimiter | None = None
        if config.rate:
            self.limiter = make_limiter(
                config.backend,
                config.redis_url,
                config.max_tracked_keys,
                key_prefix=config.redis_key_prefix,
                fail_open=config.fail_open,
            )

    def check_sizes(
        self, content: str, metadata: Mapping[str, Any] | None, tags: Sequence[str] | None
    ) -> None:
        """Raise ``TooLargeError`` (``content_too_large`` / ``metadata_too_large``) or
        ``ValidationError`` (``too_many_tags`` / ``tag_too_long``)."""
        cfg = self.config
        # A str of n characters encodes to n..4n bytes: skip the encode when the answer is known.
        if len(content) > cfg.max_content_bytes or (
            len(content) * 4 > cfg.max_content_bytes and _utf8_len(content) > cfg.max_content_bytes
        ):
            raise TooLargeError(
                f"content is larger than {cfg.max_content_bytes} bytes (UTF-8); "
                "split it into smaller memories",
                code="content_too_large",
            )
        if metadata and metadata_bytes(metadata) > cfg.max_metadata_bytes:
            raise TooLargeError(
                f"metadata is larger than {cfg.max_metadata_bytes} bytes as JSON; "
                "keep large data out of metadata",
                code="metadata_too_large",
            )
        tags = tags or ()
        if len(tags) > cfg.max_tags:
            raise ValidationError(
                f"at most {cfg.max_tags} tags are allowed, got {len(tags)}", code="too_many_tags"
            )
        for tag in tags:
            if len(tag) > cfg.max_tag_length:
                raise ValidationError(
                    f"a tag is longer than {cfg.max_tag_length} characters", code="tag_too_long"
                )

    def _rule(self, operation: str) -> RateLimitConfig | None:
        return self.config.rate.get(operation) or self.config.rate.get("*")

    async def acquire(self, who: str | None, bank_id: str, operation: str, cost: int = 1) -> None:
        """Count one call of ``operation`` by ``who`` on ``bank_id``; raise ``RateLimitedError``
        (``rate_limited`` or ``quota_exceeded``, with ``retry_after``) when over a limit."""
        rule = self._rule(operation)
        if rule is None or self.limiter is None:
            return
        key = f"{operation}|{who or ANONYMOUS}|{bank_id}"
        if rule.per_second is not None:
            burst = rule.burst or max(1, math.ceil(rule.per_second))
            decision = await self.limiter.hit(key, rule.per_second, burst, cost)
            if not decision.allowed:
                raise RateLimitedError(
                    f"too many {operation} calls on this bank; retry in {decision.retry_after:.1f}s",
                    retry_after=decision.retry_after,
                    code="rate_limited",
                )
        if rule.daily_quota is not None:
            decision = await self.limiter.quota(key, rule.daily_quota, cost)
            if not decision.allowed:
                raise RateLimitedError(
                    f"daily quota of {rule.daily_quota} {operation} calls on this bank is used up",
                    retry_after=decision.retry_after,
                    code="quota_exceeded",
                )

    async def open(self) -> None:
        if self.limiter is not None:
            await self.limiter.open()

    async def close(self) -> None:
        if self.limiter is not None:
            await self.limiter.close()
