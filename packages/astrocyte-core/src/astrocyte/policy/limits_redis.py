"""Redis limiter state: shared by every process, atomic per key.

Each call is one Lua script run with ``EVALSHA`` (loaded on first use, reloaded after a
``NOSCRIPT``), so the read-modify-write of a bucket or a quota counter cannot interleave between
processes. Time comes from the Redis server (``TIME``), so replicas with skewed clocks agree. Every
key carries a TTL: a bucket expires once it would be full again, a quota counter after its UTC day.
Needs the ``redis`` extra (``pip install astrocyte-core[redis]``).
"""

from __future__ import annotations

from typing import Any

from astrocyte.errors import ConfigError, ProviderUnavailableError
from astrocyte.policy.limiter import Decision

# Mirrors astrocyte.policy.limiter.take_tokens. Floats are returned as strings because Redis
# truncates Lua numbers to integers in replies.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local need = math.min(cost, burst)
local allowed = 0
local retry = 0
if tokens >= need then
  tokens = tokens - cost
  allowed = 1
else
  retry = (need - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(retry), tostring(tokens)}
"""

_DAILY_QUOTA = """
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
local day = math.floor(now / 86400)
local s = redis.call('HMGET', KEYS[1], 'day', 'used')
local used = 0
if tonumber(s[1]) == day then used = tonumber(s[2]) or 0 end
local reset = (day + 1) * 86400 - now
if used + cost > limit then
  return {0, reset, limit - used}
end
used = used + cost
redis.call('HSET', KEYS[1], 'day', day, 'used', used)
redis.call('EXPIRE', KEYS[1], reset + 60)
return {1, 0, limit - used}
"""


class RedisLimiterState:
    """:class:`~astrocyte.policy.limiter.LimiterState` on Redis (``redis.asyncio``)."""

    def __init__(self, url: str, *, key_prefix: str = "astrocyte:limits:", client: Any | None = None) -> None:
        try:
            import redis.asyncio as aioredis
            from redis import exceptions as redis_errors
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "limits.backend 'redis' needs the redis package: pip install 'astrocyte-core[redis]'",
                code="config_invalid",
            ) from exc
        self._client = client or aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._errors = (redis_errors.ConnectionError, redis_errors.TimeoutError)
        self._prefix = key_prefix
        self._bucket = self._client.register_script(_TOKEN_BUCKET)
        self._quota = self._client.register_script(_DAILY_QUOTA)

    async def hit(self, key: str, rate: float, burst: int, cost: int = 1) -> Decision:
        allowed, retry, tokens = await self._run(self._bucket, f"{self._prefix}rate|{key}", rate, burst, cost)
        return Decision(bool(int(allowed)), float(retry), max(0, int(float(tokens))))

    async def quota(self, key: str, limit: int, cost: int = 1) -> Decision:
        allowed, retry, remaining = await self._run(self._quota, f"{self._prefix}quota|{key}", limit, cost)
        return Decision(bool(int(allowed)), float(retry), max(0, int(remaining)))

    async def _run(self, script: Any, key: str, *args: float) -> list[Any]:
        try:
            return list(await script(keys=[key], args=[repr(a) if isinstance(a, float) else a for a in args]))
        except self._errors as exc:
            raise ProviderUnavailableError(
                f"rate limiter backend (redis) unreachable: {type(exc).__name__}", code="limiter_unavailable"
            ) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except self._errors as exc:
            raise ProviderUnavailableError(
                f"rate limiter backend (redis) unreachable: {type(exc).__name__}", code="limiter_unavailable"
            ) from exc

    async def close(self) -> None:
        await self._client.aclose()
