"""Size limits, the token bucket and daily quota, and the in-process state's bounded memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from astrocyte.errors import RateLimitedError, TooLargeError, ValidationError
from astrocyte.policy.config import LimitsConfig, PolicyConfig
from astrocyte.policy.engine import PolicyEngine
from astrocyte.policy.limiter import InProcessLimiterState, LimiterState, RateLimiter, make_limiter
from astrocyte.types import AstrocyteContext
from pydantic import ValidationError as PydanticValidationError

ALICE = AstrocyteContext(principal="user:alice")


def engine(**limits: Any) -> PolicyEngine:
    return PolicyEngine.from_config(PolicyConfig.model_validate({"limits": limits}))


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- sizes ---------------------------------------------------------------------------------------


def test_content_over_the_byte_limit_is_too_large() -> None:
    policy = engine(max_content_bytes=10)
    policy.check_sizes("x" * 10, {}, [])
    with pytest.raises(TooLargeError) as info:
        policy.check_sizes("x" * 11, {}, [])
    assert info.value.code == "content_too_large" and info.value.http_status == 413


def test_content_limit_counts_utf8_bytes_not_characters() -> None:
    policy = engine(max_content_bytes=10)
    with pytest.raises(TooLargeError):
        policy.check_sizes("é" * 6, {}, [])  # 6 characters, 12 bytes
    policy.check_sizes("é" * 5, {}, [])


def test_metadata_over_the_byte_limit_is_too_large() -> None:
    policy = engine(max_metadata_bytes=20)
    policy.check_sizes("x", {"k": "v" * 12}, [])  # {"k":"vvvvvvvvvvvv"} is 20 bytes
    with pytest.raises(TooLargeError) as info:
        policy.check_sizes("x", {"k": "v" * 13}, [])
    assert info.value.code == "metadata_too_large"


def test_too_many_tags_and_too_long_tags_are_invalid() -> None:
    policy = engine(max_tags=2, max_tag_length=5)
    policy.check_sizes("x", {}, ["a", "bbbbb"])
    with pytest.raises(ValidationError) as many:
        policy.check_sizes("x", {}, ["a", "b", "c"])
    assert many.value.code == "too_many_tags"
    with pytest.raises(ValidationError) as long:
        policy.check_sizes("x", {}, ["cccccc"])
    assert long.value.code == "tag_too_long"


def test_redis_backend_needs_a_url() -> None:
    with pytest.raises(PydanticValidationError, match="redis_url"):
        LimitsConfig.model_validate({"backend": "redis", "rate": {"*": {"per_second": 1}}})


# -- token bucket and quota ----------------------------------------------------------------------


async def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(InProcessLimiterState(clock=clock))
    decisions = [await limiter.hit("k", rate=2.0, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert (await limiter.hit("k", rate=2.0, burst=3)).allowed
    assert not (await limiter.hit("k", rate=2.0, burst=3)).allowed


async def test_a_batch_larger_than_the_burst_passes_from_a_full_bucket_and_leaves_a_debt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(InProcessLimiterState(clock=clock))
    assert (await limiter.hit("k", rate=1.0, burst=5, cost=8)).allowed
    denied = await limiter.hit("k", rate=1.0, burst=5)
    assert not denied.allowed and denied.retry_after == pytest.approx(4.0)


async def test_daily_quota_counts_per_utc_day() -> None:
    wall = FakeClock(now=86_400 * 20_000 + 86_000)  # 400 s before a UTC midnight
    limiter = RateLimiter(InProcessLimiterState(wall_clock=wall))
    assert [(await limiter.quota("k", limit=2)).allowed for _ in range(3)] == [True, True, False]
    denied = await limiter.quota("k", limit=2)
    assert denied.retry_after == pytest.approx(400.0)
    wall.now += 400
    assert (await limiter.quota("k", limit=2)).allowed


def test_in_process_state_satisfies_the_protocol() -> None:
    assert isinstance(InProcessLimiterState(), LimiterState)
    assert isinstance(make_limiter("memory", None, 10).state, InProcessLimiterState)


async def test_in_process_state_memory_stays_bounded_with_100000_distinct_keys() -> None:
    state = InProcessLimiterState(max_keys=10_000)
    limiter = RateLimiter(state)
    tracemalloc.start()
    try:
        for i in range(20_000):
            await limiter.hit(f"ip|10.{i // 65536}.{i // 256 % 256}.{i % 256}", rate=1.0, burst=5)
        after_20k = tracemalloc.get_traced_memory()[0]
        for i in range(20_000, 100_000):
            await limiter.hit(f"ip|10.{i // 65536}.{i // 256 % 256}.{i % 256}", rate=1.0, burst=5)
        after_100k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(state) == 10_000
    # Five times the keys, (almost) no more memory: the oldest keys were evicted.
    assert after_100k < after_20k * 1.1 + 64_000, (after_20k, after_100k)
    # The most recent keys are the ones kept.
    assert "ip|10.1.134.159" in state._buckets and "ip|10.0.0.0" not in state._buckets


# -- the engine's per (principal, bank, operation) limits ----------------------------------------


async def test_rate_limit_applies_per_principal_bank_and_operation() -> None:
    policy = engine(rate={"retain": {"per_second": 0.001, "burst": 2}})
    await policy.acquire(ALICE, "b1", "retain")
    await policy.acquire(ALICE, "b1", "retain")
    with pytest.raises(RateLimitedError) as info:
        await policy.acquire(ALICE, "b1", "retain")
    assert info.value.code == "rate_limited" and info.value.http_status == 429
    assert info.value.retry_after > 0
    await policy.acquire(ALICE, "b2", "retain")  # another bank
    await policy.acquire(AstrocyteContext(principal="user:bob"), "b1", "retain")  # another principal
    await policy.acquire(ALICE, "b1", "recall")  # an operation with no limit
    await policy.acquire(AstrocyteContext(principal="service:gw", acting_for="user:alice"), "b1", "retain")


async def test_wildcard_operation_limit_and_daily_quota() -> None:
    policy = engine(rate={"*": {"daily_quota": 3}})
    for _ in range(3):
        await policy.acquire(ALICE, "b1", "recall")
    with pytest.raises(RateLimitedError) as info:
        await policy.acquire(ALICE, "b1", "recall")
    assert info.value.code == "quota_exceeded" and 0 < info.value.retry_after <= 86_400


async def test_no_rate_config_means_no_limiter() -> None:
    policy = engine()
    assert policy.limits.limiter is None
    for _ in range(100):
        await policy.acquire(None, "b1", "retain")
