"""Two gateway processes on the Redis limiter backend spend one per-client budget."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
from astrocyte.testing import service_env
from conftest import assert_error


def test_two_gateways_share_one_budget(gateway_process: Any, memory_config: Path) -> None:
    redis_url = service_env("ASTROCYTE_TEST_REDIS_URL")
    env = {
        "ASTROCYTE_CONFIG_PATH": str(memory_config),
        "ASTROCYTE_RATE_LIMIT_PER_SECOND": "0.05",
        "ASTROCYTE_RATE_LIMIT_BURST": "4",
        "ASTROCYTE_RATE_LIMIT_BACKEND": "redis",
        "ASTROCYTE_RATE_LIMIT_REDIS_URL": redis_url,
        "ASTROCYTE_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    first, second = gateway_process(env), gateway_process(env)
    # A fresh client address per run (set by the trusted local proxy) so earlier runs cannot interfere.
    client = {"X-Forwarded-For": f"198.18.{random.randint(0, 255)}.{random.randint(1, 254)}"}
    statuses = [
        httpx.get(f"{gateway.url}/v1/banks", headers=client).status_code for gateway in (first, second) * 3
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]
    limited = httpx.get(f"{first.url}/v1/banks", headers=client)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    other_client = {"X-Forwarded-For": "198.19.0.1"}
    assert httpx.get(f"{second.url}/v1/banks", headers=other_client).status_code == 200
