"""Redis Streams ingestion benchmark: sustained entries/s and produce-to-recallable latency.

    python benchmarks/redis_ingest.py                          # SQLite (+ PostgreSQL when set)
    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... python benchmarks/redis_ingest.py
    python benchmarks/redis_ingest.py --entries 20000 --single-entries 1500 --stores sqlite

A private redis-server (``ASTROCYTE_TEST_REDIS_SERVER_BIN`` or ``redis-server`` on PATH; AOF off)
is started on a free 127.0.0.1 port, unless ``--redis-url`` names one. For each store, two
consumers run in the same process, one after the other: the driver defaults (``batch_size`` 500,
``concurrency`` 4) and a one-entry-at-a-time consumer (``batch_size`` 1, ``concurrency`` 1). Each
drains a pre-filled stream (throughput: entries / seconds until the group has nothing pending and
no lag), then entries are produced at a steady rate below that throughput and the time from XADD
to the sink answering ``stored`` is measured (the memory is recallable from then on; a sample is
recalled to prove it). The engine uses the offline ``hashing`` embedder. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astrocyte import Astrocyte
from astrocyte.ingest.driver import load_driver_class
from astrocyte.ingest.sink import IngestMessage, IngestSink, Outcome
from astrocyte.types import RetainRequest
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

BATCHED = {"batch_size": 500, "concurrency": 4}  # the driver's defaults
ONE_AT_A_TIME = {"batch_size": 1, "concurrency": 1}
GROUP = "bench"


class TimedSink:
    """The core's sink, recording when each idempotency key was answered ``stored``."""

    def __init__(self, inner: IngestSink) -> None:
        self.inner = inner
        self.stored_at: dict[str, float] = {}
        self.stored = 0

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        outcomes = await self.inner.submit(batch)
        now = time.perf_counter()
        for message, outcome in zip(batch, outcomes, strict=True):
            if outcome.status == "stored":
                self.stored_at[message.idempotency_key] = now
                self.stored += 1
        return outcomes


def sentence(index: int, run: str) -> str:
    # The code word makes each entry findable among thousands of near-identical ones.
    return f"bench {run} entry {index} code q{index}x{run[-4:]}: agent {index % 97} saw order {index * 31 % 10007}"


async def fill(client: Redis, stream: str, run: str, count: int) -> None:
    for start in range(0, count, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 1000)):
                pipe.xadd(stream, {"content": sentence(i, run), "bank_id": run})
            await pipe.execute()


async def settled(client: Redis, stream: str) -> bool:
    groups = await client.xinfo_groups(stream)
    row = next((g for g in groups if g["name"] == GROUP.encode()), None)
    return row is not None and row.get("lag") == 0 and row.get("pending") == 0


async def run_consumer(
    brain: Astrocyte, redis_url: str, mode: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Throughput over a pre-filled backlog, then latency at a steady produce rate."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    stream = f"{run}-stream"
    count = args.entries if mode["batch_size"] > 1 else args.single_entries
    client = Redis.from_url(redis_url)
    await fill(client, stream, run, count)
    driver_class = load_driver_class("stream", "redis")
    config = driver_class.validate_config(
        {"url": redis_url, "streams": [stream], "group": GROUP, "block_ms": 50, **mode}
    )
    sink = TimedSink(IngestSink(brain, source_id="bench"))
    driver = driver_class("bench", config, sink=sink)
    began = time.perf_counter()
    task = asyncio.create_task(driver.start())
    while not await settled(client, stream):  # noqa: ASYNC110 - polling Redis, there is no event
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - began
    rate = count / seconds
    latency = await measure_latency(client, stream, run, sink, rate, args)
    recalled = await recall_sample(brain, run)
    await driver.stop(5.0)
    await task
    await client.delete(stream)
    await client.aclose()
    return {
        "mode": dict(mode),
        "entries": count,
        "seconds": round(seconds, 3),
        "entries_per_s": round(rate, 1),
        "stored": sink.stored - latency.pop("produced"),
        "latency": latency,
        "sample_recalled": recalled,
    }


async def measure_latency(
    client: Redis, stream: str, run: str, sink: TimedSink, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """XADD at ``args.latency_load`` x the measured rate for ``args.latency_seconds``; XADD -> stored."""
    per_second = max(5.0, rate * args.latency_load)
    tick = 0.01
    produced: dict[str, float] = {}
    carry = 0.0
    index = 10_000_000
    ends = time.perf_counter() + args.latency_seconds
    while time.perf_counter() < ends:
        carry += per_second * tick
        while carry >= 1:
            carry -= 1
            sent = time.perf_counter()
            entry_id = await client.xadd(stream, {"content": sentence(index, run), "bank_id": run})
            produced[f"{stream}:{entry_id.decode()}"] = sent
            index += 1
        await asyncio.sleep(tick)
    deadline = time.perf_counter() + 60
    while any(key not in sink.stored_at for key in produced) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    samples = sorted((sink.stored_at[k] - t) * 1000 for k, t in produced.items() if k in sink.stored_at)
    return {
        "produce_rate_per_s": round(per_second, 1),
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples), 2) if samples else None,
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2) if samples else None,
        "produced": len(produced),
    }


async def recall_sample(brain: Astrocyte, run: str) -> bool:
    """Recall a few stored entries (backlog and latency phase): stored means recallable."""
    for index in (0, 7, 10_000_000):
        result = await brain.recall(sentence(index, run), bank_id=run, max_results=5)
        if not any(hit.text == sentence(index, run) for hit in result.hits):
            return False
    return True


async def bench_store(
    name: str, engine: dict[str, Any], redis_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    async with Astrocyte.from_dict(engine) as brain:
        await warm_up(brain)
        ceiling = await engine_only(brain, args)
        batched = await run_consumer(brain, redis_url, BATCHED, args)
        single = await run_consumer(brain, redis_url, ONE_AT_A_TIME, args)
    return {
        "engine_only": ceiling,
        "batched": batched,
        "one_at_a_time": single,
        "speedup": round(batched["entries_per_s"] / single["entries_per_s"], 1),
    }


async def warm_up(brain: Astrocyte) -> None:
    """One batch through the engine first, so neither consumer pays for first-use setup."""
    bank = f"bench-warmup-{uuid.uuid4().hex[:8]}"
    await brain.retain_many([RetainRequest(content=sentence(i, bank), bank_id=bank) for i in range(500)])


async def engine_only(brain: Astrocyte, args: argparse.Namespace) -> dict[str, float]:
    """The engine without Redis, same entries: retain_many in batches of 500, and one retain at a
    time. The consumers cannot beat these; they show what the driver itself costs."""
    bank = f"bench-engine-{uuid.uuid4().hex[:8]}"
    requests = [RetainRequest(content=sentence(i, bank), bank_id=bank) for i in range(args.entries // 2)]
    began = time.perf_counter()
    for start in range(0, len(requests), 500):
        await brain.retain_many(requests[start : start + 500])
    batched = len(requests) / (time.perf_counter() - began)
    singles = [sentence(i, bank + "-single") for i in range(args.single_entries)]
    began = time.perf_counter()
    for content in singles:
        await brain.retain(content, bank)
    single = len(singles) / (time.perf_counter() - began)
    return {"retain_many_500_per_s": round(batched, 1), "retain_per_s": round(single, 1)}


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # only needed with PostgreSQL

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = os.environ.get("ASTROCYTE_TEST_REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        raise SystemExit("no redis-server: set ASTROCYTE_TEST_REDIS_SERVER_BIN or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(directory), "--daemonize", "no"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    process.kill()
    raise SystemExit("redis-server did not start")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="redis-ingest-bench-"))
    process, url = (None, args.redis_url) if args.redis_url else start_redis(workdir)
    stores: dict[str, dict[str, Any]] = {
        "sqlite": {"store": "sqlite", "store_config": {"path": str(workdir / "bench.db")}},
    }
    dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    schema = f"redis_bench_{uuid.uuid4().hex[:8]}"  # a schema of its own, dropped afterwards
    if dsn:
        stores["postgres"] = {"store": "postgres", "store_config": {"dsn": dsn, "schema": schema}}
    results: dict[str, Any] = {}
    selected = args.stores or list(stores)
    try:
        for name in selected:
            engine = {**stores[name], "embedder": "hashing"}
            results[name] = await bench_store(name, engine, url, args)
    finally:
        if "postgres" in selected and dsn:
            await drop_schema(dsn, schema)
        if process is not None:
            process.terminate()
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return report(results, url, args)


def report(results: dict[str, Any], url: str, args: argparse.Namespace) -> dict[str, Any]:
    sqlite = results.get("sqlite")
    return {
        "benchmark": "redis_ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "note": "shared machine: other work runs at the same time, figures vary between runs",
        },
        "settings": {"entries": args.entries, "single_entries": args.single_entries,
                     "latency_seconds": args.latency_seconds, "latency_load": args.latency_load,
                     "embedder": "hashing", "redis": "private, AOF off" if not args.redis_url else url,
                     "hiredis": HIREDIS_AVAILABLE},
        "stores": results,
        "targets": {
            "sqlite_entries_per_s_at_least_5000": bool(sqlite and sqlite["batched"]["entries_per_s"] >= 5000),
            "sqlite_speedup_at_least_10x": bool(sqlite and sqlite["speedup"] >= 10),
        },
    }  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=20_000, help="backlog for the batched consumer")
    parser.add_argument(
        "--single-entries", type=int, default=1_500, help="backlog for the one-at-a-time consumer"
    )
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--latency-load", type=float, default=0.5, help="produce rate as a share of throughput"
    )
    parser.add_argument("--stores", type=lambda s: s.split(","), default=None, help="sqlite,postgres")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a private one")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
