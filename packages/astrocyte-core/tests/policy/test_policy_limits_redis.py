"""The Redis limiter state: atomic across processes, keys that expire, fail closed by default."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

import pytest
from astrocyte.errors import ProviderUnavailableError, RateLimitedError
from astrocyte.policy.config import PolicyConfig
from astrocyte.policy.engine import PolicyEngine
from astrocyte.policy.limiter import make_limiter
from astrocyte.policy.limits_redis import _TOKEN_BUCKET
from astrocyte.types import AstrocyteContext

pytest.importorskip("redis")

# One worker process: wait for the shared start instant, hit the key N times (paced, so the two
# processes' calls interleave), print how many passed.
WORKER = """
import asyncio, json, sys, time
from astrocyte.policy.limiter import make_limiter

async def main(url, prefix, mode, key, hits, start_at):
    limiter = make_limiter("redis", url, key_prefix=prefix)
    await limiter.open()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    allowed = 0
    for _ in range(hits):
        if mode == "rate":
            decision = await limiter.hit(key, rate=0.01, burst=120)
        else:
            decision = await limiter.quota(key, limit=30)
        allowed += decision.allowed
        await asyncio.sleep(0.002)
    await limiter.close()
    print(json.dumps({"allowed": allowed}))

url, prefix, mode, key, hits, start_at = sys.argv[1:]
asyncio.run(main(url, prefix, mode, key, int(hits), float(start_at)))
"""


async def run_workers(redis_url: str, prefix: str, mode: str, hits: int, processes: int = 2) -> list[int]:
    start_at = str(time.time() + 1.5)  # both processes connected before anyone hits
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            redis_url,
            prefix,
            mode,
            "shared-key",
            str(hits),
            start_at,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out)["allowed"])
    return results


async def test_rate_limit_is_shared_by_two_processes(redis_url: str, key_prefix: str) -> None:
    allowed = await run_workers(redis_url, key_prefix, "rate", hits=100)
    # 200 interleaved hits against one bucket of 120 (refill 0.01/s is negligible): exactly 120 pass
    # in total; unshared state would let all 200 through.
    assert sum(allowed) == 120, allowed


async def test_daily_quota_is_shared_by_two_processes(redis_url: str, key_prefix: str) -> None:
    allowed = await run_workers(redis_url, key_prefix, "quota", hits=25)
    assert sum(allowed) == 30, allowed


async def test_keys_expire_and_scripts_run_by_sha(redis_url: str, key_prefix: str) -> None:
    import hashlib

    import redis.asyncio as aioredis

    limiter = make_limiter("redis", redis_url, key_prefix=key_prefix)
    await limiter.hit("k", rate=1.0, burst=10)
    await limiter.quota("k", limit=5)
    await limiter.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        bucket_ttl = await client.pttl(f"{key_prefix}rate|k")
        quota_ttl = await client.ttl(f"{key_prefix}quota|k")
        sha = hashlib.sha1(_TOKEN_BUCKET.encode()).hexdigest()
        assert (await client.script_exists(sha)) == [True]
        await client.delete(f"{key_prefix}rate|k", f"{key_prefix}quota|k")
    finally:
        await client.aclose()
    assert 0 < bucket_ttl <= 2_000  # one token used: full again after 1 s, plus 1 s slack
    assert 0 < quota_ttl <= 86_400 + 60


async def test_engine_enforces_limits_through_redis(redis_url: str, key_prefix: str) -> None:
    config = PolicyConfig.model_validate(
        {
            "limits": {
                "backend": "redis",
                "redis_url": redis_url,
                "redis_key_prefix": key_prefix,
                "rate": {"retain": {"per_second": 0.01, "burst": 2}},
            }
        }
    )
    policy = PolicyEngine.from_config(config)
    await policy.open()
    try:
        alice = AstrocyteContext(principal="user:alice")
        await policy.acquire(alice, "b1", "retain")
        await policy.acquire(alice, "b1", "retain")
        with pytest.raises(RateLimitedError) as info:
            await policy.acquire(alice, "b1", "retain")
        assert info.value.retry_after == pytest.approx(100, rel=0.05)
    finally:
        await policy.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_unreachable_redis_fails_closed_by_default() -> None:
    limiter = make_limiter("redis", closed_port_url())
    with pytest.raises(ProviderUnavailableError) as info:
        await limiter.hit("k", rate=1.0, burst=1)
    assert info.value.code == "limiter_unavailable" and info.value.http_status == 503
    with pytest.raises(ProviderUnavailableError):
        await limiter.open()
    await limiter.close()


async def test_unreachable_redis_lets_calls_through_when_fail_open() -> None:
    limiter = make_limiter("redis", closed_port_url(), fail_open=True)
    await limiter.open()
    assert (await limiter.hit("k", rate=1.0, burst=1)).allowed
    assert (await limiter.quota("k", limit=1)).allowed
    await limiter.close()
