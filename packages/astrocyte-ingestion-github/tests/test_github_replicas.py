"""Two poller replicas in two processes over one store: only the lease holder polls, and the
other takes over within the lease time once the holder is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from astrocyte import Astrocyte
from astrocyte_ingestion_github.testing import FakeGitHub

from .conftest import TOKEN, eventually

REPO = "octo/hello"
LEASE_SECONDS = 3.0
INTERVAL = 0.3
RUNNER = Path(__file__).with_name("replica_runner.py")


async def _spawn(engine_config: dict[str, Any], github: FakeGitHub, name: str) -> asyncio.subprocess.Process:
    driver_config = {
        "repositories": [REPO],
        "api_url": github.url,
        "token": TOKEN,
        "interval_seconds": INTERVAL,
        "lease_seconds": LEASE_SECONDS,
        "user_agent": f"replica-{name}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(RUNNER),
        json.dumps(engine_config),
        json.dumps(driver_config),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert line.strip() == b"ready", line
    return process


def _polled_by(github: FakeGitHub, name: str, after: float = 0.0) -> int:
    return sum(1 for r in github.requests if r.user_agent == f"replica-{name}" and r.at >= after)


async def test_only_one_replica_polls_and_the_other_takes_over_when_it_is_killed(
    github: FakeGitHub, engine_config: dict[str, Any]
) -> None:
    for i in range(5):
        github.create_issue(REPO, f"issue {i}", f"replicated issue {i}")
    first = await _spawn(engine_config, github, "a")
    second = None
    try:
        await eventually("replica a to poll", lambda: _polled_by(github, "a") >= 2, within=30)
        second = await _spawn(engine_config, github, "b")
        await asyncio.sleep(LEASE_SECONDS * 1.5)  # b renews its attempt every lease/3 meanwhile
        assert _polled_by(github, "b") == 0, "the replica without the lease polled"
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed = time.time()
        await eventually(
            "replica b to take over", lambda: _polled_by(github, "b") > 0, within=LEASE_SECONDS + 10
        )
        took_over = min(r.at for r in github.requests if r.user_agent == "replica-b")
        assert took_over - killed <= LEASE_SECONDS + INTERVAL + 2.0, "took longer than a lease to take over"
        github.create_issue(REPO, "late", "an issue opened after the takeover")
        async with Astrocyte.from_dict(engine_config) as engine:
            await _until_count(engine, 6)
            assert (await engine.bank_stats("github:octo.hello")).memory_count == 6
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGKILL)
                await process.wait()


async def _until_count(engine: Astrocyte, count: int) -> None:
    deadline = time.monotonic() + 20
    while (await engine.bank_stats("github:octo.hello")).memory_count < count:
        assert time.monotonic() < deadline, "the surviving replica did not ingest the new issue"
        await asyncio.sleep(0.1)
