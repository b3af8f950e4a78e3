"""Redis outage recovery: seconds from redis-server answering again to the driver consuming again.

    python benchmarks/redis_reconnect.py                     # 3 outages of 20 s, driver defaults
    python benchmarks/redis_reconnect.py --outage-seconds 40 --runs 5
    python benchmarks/redis_reconnect.py --set reconnect_max_ms=30000   # the old behaviour

Needs ``ASTROCYTE_TEST_REDIS_SERVER_BIN`` (or ``redis-server`` on PATH) and the redis package
installed (``pip install ./packages/astrocyte-core ./packages/astrocyte-ingestion-redis``). A private
redis-server (AOF, ``appendfsync always``) listens on a free 127.0.0.1 port. The driver runs with
its defaults over an in-memory sink. Each run: the driver consumes, redis-server is stopped for
``--outage-seconds`` (long enough for an uncapped exponential backoff to reach long intervals), then
started again; once it answers PING an entry is added, and the figure is the time from that PING to
the sink storing the entry. It also counts the driver's failed reconnect attempts during the outage
(its "reconnecting" warnings), to show it does not hammer a server that is down. Prints one JSON
document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from astrocyte.testing.ingest_contract import ContractSink
from astrocyte_ingestion_redis import RedisStreamDriver
from astrocyte_ingestion_redis.testing import RedisServer
from redis.asyncio import Redis


class _Attempts(logging.Handler):
    """Counts the driver's reconnect warnings (one per failed attempt)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "reconnecting" in record.getMessage():
            self.count += 1


async def one_outage(
    server: RedisServer, overrides: dict[str, Any], outage: float, index: int
) -> dict[str, float]:
    stream = f"reconnect-{index}-{os.urandom(3).hex()}"
    sink = ContractSink()
    config = RedisStreamDriver.validate_config({"url": server.url, "streams": [stream], **overrides})
    driver = RedisStreamDriver("bench", config, sink=sink)
    attempts = _Attempts()
    logging.getLogger("astrocyte_ingestion_redis").addHandler(attempts)
    task = asyncio.create_task(driver.start())
    client = Redis.from_url(server.url)
    try:
        await client.xadd(stream, {"content": "before", "bank_id": "bench"})
        await _until(lambda: sink.stored_contents["before"] == 1, 30)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(outage)
        attempts_during_outage = attempts.count
        await asyncio.to_thread(server.start)  # returns once redis-server answers PING
        ready = time.perf_counter()
        await client.aclose()
        client = Redis.from_url(server.url)  # the producer's old connection died with the server
        await client.xadd(stream, {"content": "after", "bank_id": "bench"})
        await _until(lambda: sink.stored_contents["after"] == 1, 120)
        consuming = time.perf_counter()
    finally:
        logging.getLogger("astrocyte_ingestion_redis").removeHandler(attempts)
        await driver.stop(2.0)
        await asyncio.wait({task}, timeout=5)
        await client.aclose()
    return {
        "ready_to_consuming_s": round(consuming - ready, 3),
        "reconnect_attempts_during_outage": attempts_during_outage,
    }


async def _until(predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the driver did not get there in time")
        await asyncio.sleep(0.005)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    binary = os.environ.get("ASTROCYTE_TEST_REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        raise SystemExit("set ASTROCYTE_TEST_REDIS_SERVER_BIN or put redis-server on PATH")
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.set)}
    directory = Path(tempfile.mkdtemp(prefix="astrocyte-reconnect-"))
    server = RedisServer(binary, directory)
    server.start()
    runs = []
    try:
        for index in range(args.runs):
            runs.append(await one_outage(server, overrides, args.outage_seconds, index))
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    figures = [r["ready_to_consuming_s"] for r in runs]
    return {
        "benchmark": "redis_reconnect",
        "outage_seconds": args.outage_seconds,
        "driver_overrides": overrides,
        "runs": runs,
        "ready_to_consuming_s_median": statistics.median(figures),
        "ready_to_consuming_s_max": max(figures),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage-seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--set", action="append", default=[], help="driver key=integer, e.g. reconnect_max_ms=30000"
    )
    return parser.parse_args()


if __name__ == "__main__":
    driver_log = logging.getLogger("astrocyte_ingestion_redis")
    driver_log.setLevel(logging.WARNING)
    driver_log.propagate = False  # counted, not printed
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
