"""Rate limits and daily quotas behind a small async state interface.

The primitive is reusable by anything that needs "at most N per second per key" (the policy engine
keys by principal, bank and operation; the HTTP gateway keys by client IP)::

    limiter = make_limiter("memory")                      # or make_limiter("redis", "redis://...")
    decision = await limiter.hit("ip|203.0.113.9", rate=5.0, burst=10)
    if not decision.allowed:
        ...  # answer 429 with Retry-After: decision.retry_after

Semantics, identical in every backend:

* ``hit`` is a token bucket holding up to ``burst`` tokens, refilled at ``rate`` tokens per second.
  A hit of ``cost`` is allowed when the bucket holds ``min(cost, burst)`` tokens; it then takes
  ``cost`` (a batch larger than ``burst`` is let through from a full bucket and leaves a debt). A
  denied hit takes nothing.
* ``quota`` is a counter per UTC day: allowed while ``used + cost <= limit``; a denied call counts
  nothing and ``retry_after`` is the time to the next UTC midnight.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from astrocyte.errors import ConfigError, ProviderUnavailableError

logger = logging.getLogger("astrocyte.policy.limiter")

_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one limiter call. ``remaining`` is whole tokens (or quota units) left."""

    allowed: bool
    retry_after: float
    remaining: int


@runtime_checkable
class LimiterState(Protocol):
    """Where limiter state lives. Each call must be atomic for its key."""

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision: ...

    async def quota(self, key: str, limit: int, cost: int = 1) -> Decision: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def take_tokens(tokens: float, elapsed: float, rate: float, burst: int, cost: int) -> tuple[float, Decision]:
    """Pure token-bucket step (the Redis Lua script mirrors it): returns the new level and decision."""
    tokens = min(float(burst), tokens + max(0.0, elapsed) * rate)
    need = min(cost, burst)
    if tokens >= need:
        tokens -= cost
        return tokens, Decision(True, 0.0, max(0, math.floor(tokens)))
    return tokens, Decision(False, (need - tokens) / rate, max(0, math.floor(tokens)))


class InProcessLimiterState:
    """Limiter state in this process's memory, bounded to ``max_keys`` buckets and ``max_keys``
    quota counters. The least recently used key is evicted first: an evicted bucket comes back full
    (it had usually refilled anyway) and an evicted quota counter comes back at zero, so size
    ``max_keys`` above the number of keys active within a day when quotas must be exact."""

    def __init__(
        self,
        max_keys: int = 50_000,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_keys < 1:
            raise ConfigError("max_keys must be at least 1", code="config_invalid")
        self.max_keys = max_keys
        self._clock = clock
        self._wall = wall_clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._quotas: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()  # the gateway may call from worker threads too

    def __len__(self) -> int:
        return len(self._buckets) + len(self._quotas)

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(burst), now))
            tokens, decision = take_tokens(tokens, now - last, rate, burst, cost)
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return decision

    async def quota(self, key: str, limit: int, cost: int = 1) -> Decision:
        now = self._wall()
        day = int(now // _DAY)
        with self._lock:
            stored_day, used = self._quotas.pop(key, (day, 0))
            if stored_day != day:
                used = 0
            if used + cost > limit:
                decision = Decision(False, (day + 1) * _DAY - now, max(0, limit - used))
            else:
                used += cost
                decision = Decision(True, 0.0, limit - used)
            self._quotas[key] = (day, used)
            if len(self._quotas) > self.max_keys:
                self._quotas.popitem(last=False)
        return decision

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._quotas.clear()


class RateLimiter:
    """Front of a :class:`LimiterState`: validates arguments and applies the fail-open choice when
    the backend is unreachable (fail closed by default: ``ProviderUnavailableError``)."""

    def __init__(self, state: LimiterState, *, fail_open: bool = False) -> None:
        self.state = state
        self.fail_open = fail_open

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from the bucket ``key`` (``rate`` per second, up to ``burst``)."""
        if rate <= 0 or burst < 1 or cost < 1:
            raise ValueError("rate must be > 0, burst >= 1 and cost >= 1")
        try:
            return await self.state.hit(key, rate, burst, cost)
        except ProviderUnavailableError as exc:
            return self._on_backend_error(exc)

    async def quota(self, key: str, limit: int, cost: int = 1) -> Decision:
        """Count ``cost`` against today's (UTC) quota ``limit`` for ``key``."""
        if limit < 0 or cost < 1:
            raise ValueError("limit must be >= 0 and cost >= 1")
        try:
            return await self.state.quota(key, limit, cost)
        except ProviderUnavailableError as exc:
            return self._on_backend_error(exc)

    def _on_backend_error(self, exc: ProviderUnavailableError) -> Decision:
        if not self.fail_open:
            raise exc
        logger.warning("rate limiter backend unavailable; letting the call through (fail_open)")
        return Decision(True, 0.0, 0)

    async def open(self) -> None:
        """Check the backend is reachable (raises ``ProviderUnavailableError`` unless fail-open)."""
        try:
            await self.state.ping()
        except ProviderUnavailableError:
            if not self.fail_open:
                raise
            logger.warning("rate limiter backend unavailable at start-up (fail_open)")

    async def close(self) -> None:
        await self.state.close()


def make_limiter(
    backend: Literal["memory", "redis"] = "memory",
    redis_url: str | None = None,
    max_keys: int = 50_000,
    *,
    key_prefix: str = "astrocyte:limits:",
    fail_open: bool = False,
) -> RateLimiter:
    """Build a limiter: ``"memory"`` (this process, at most ``max_keys`` keys) or ``"redis"``
    (shared by every process using ``redis_url``; keys under ``key_prefix`` expire on their own)."""
    if backend == "memory":
        return RateLimiter(InProcessLimiterState(max_keys), fail_open=fail_open)
    if backend == "redis":
        if not redis_url:
            raise ConfigError("the redis limiter backend needs a redis_url", code="config_invalid")
        from astrocyte.policy.limits_redis import RedisLimiterState

        return RateLimiter(RedisLimiterState(redis_url, key_prefix=key_prefix), fail_open=fail_open)
    raise ConfigError(f"unknown limiter backend {backend!r}; use memory or redis", code="config_invalid")
