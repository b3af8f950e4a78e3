"""The per-client limiter for :mod:`middleware.rate_limit`: the core's rate limiter
(``astrocyte.policy.limiter``), in-process (bounded to ``ASTROCYTE_RATE_LIMIT_MAX_CLIENTS`` keys,
least recently used evicted) or on Redis so every replica spends one shared budget."""

from __future__ import annotations

from typing import Any

from astrocyte.policy.limiter import RateLimiter, make_limiter

from astrocyte_gateway.settings import Settings

KEY_PREFIX = "astrocyte:gateway:clients:"


def build_client_limiter(settings: Settings) -> RateLimiter | None:
    """None when ``ASTROCYTE_RATE_LIMIT_PER_SECOND`` is unset (no per-client limit)."""
    if settings.rate_limit_per_second is None:
        return None
    return make_limiter(
        settings.rate_limit_backend,
        settings.rate_limit_redis_url,
        settings.rate_limit_max_clients,
        key_prefix=KEY_PREFIX,
    )


def tracked_clients(limiter: Any) -> int | None:
    """How many client buckets an in-process limiter holds (None for shared backends)."""
    state = getattr(limiter, "state", None)
    try:
        return len(state)  # type: ignore[arg-type]
    except TypeError:
        return None
