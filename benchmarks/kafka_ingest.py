"""Kafka ingestion benchmark: sustained records/s and produce-to-recallable latency.

    python benchmarks/kafka_ingest.py                          # SQLite (+ PostgreSQL when set)
    ASTROCYTE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:9092 ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... \\
        python benchmarks/kafka_ingest.py --records 30000 --stores sqlite

Runs against the broker in ``ASTROCYTE_TEST_KAFKA_BOOTSTRAP`` (or ``--bootstrap``), on new topics
of 6 partitions. For each store, two consumers run in the same process, one after the other: the
``kafka`` driver with its defaults (``batch_size`` 500, manual commits after the sink answers) and
a naive consumer as the reference's driver works (``getone()``, one record per ``submit``, the
consumer's auto-commit). Each drains a pre-filled topic (throughput: records / seconds until the
sink has stored the last one), then the driver is fed at a steady rate below its throughput and
the time from ``send`` to the sink answering ``stored`` is measured (the memory is recallable from
then on; a sample is recalled to prove it). The engine uses the offline ``hashing`` embedder.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from astrocyte import Astrocyte
from astrocyte.ingest.driver import load_driver_class
from astrocyte.ingest.sink import IngestMessage, IngestSink, Outcome
from astrocyte.types import RetainRequest
from astrocyte_ingestion_kafka.config import IdempotencyKey, RecordMapping
from astrocyte_ingestion_kafka.decode import RecordDecoder

PARTITIONS = 6


class TimedSink:
    """The core's sink, recording when each idempotency key was answered ``stored``."""

    def __init__(self, inner: IngestSink) -> None:
        self.inner = inner
        self.stored_at: dict[str, float] = {}
        self.stored = 0
        self.first_answer: float | None = None  # when the first batch was answered
        self.first_batch = 0

    async def submit(self, batch: Sequence[IngestMessage]) -> list[Outcome]:
        outcomes = await self.inner.submit(batch)
        now = time.perf_counter()
        if self.first_answer is None:
            self.first_answer, self.first_batch = now, len(batch)
        for message, outcome in zip(batch, outcomes, strict=True):
            if outcome.status == "stored":
                self.stored_at[message.idempotency_key] = now
                self.stored += 1
        return outcomes


def sentence(index: int, run: str) -> str:
    # The code word makes each record findable among thousands of near-identical ones.
    return f"bench {run} record {index} code q{index}x{run[-4:]}: agent {index % 97} saw order {index * 31 % 10007}"


def value(index: int, run: str) -> bytes:
    return json.dumps({"content": sentence(index, run), "bank_id": run}).encode()


async def new_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def fill(bootstrap: str, topic: str, run: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value(i, run)) for i in range(count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def until_stored(sink: TimedSink, count: int, within: float = 600) -> None:
    deadline = time.perf_counter() + within
    while sink.stored < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {sink.stored} of {count} stored within {within:.0f}s")
        await asyncio.sleep(0.005)


async def run_driver(brain: Astrocyte, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """The kafka driver: throughput over a pre-filled backlog, then latency at a steady rate."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    await new_topic(bootstrap, run)
    await fill(bootstrap, run, run, args.records)
    driver_class = load_driver_class("stream", "kafka")
    config = driver_class.validate_config({"bootstrap_servers": [bootstrap], "topics": [run], "group": run})
    sink = TimedSink(IngestSink(brain, source_id="bench"))
    driver = driver_class("bench", config, sink=sink)
    began = time.perf_counter()
    task = asyncio.create_task(driver.start())
    await until_stored(sink, args.records)
    finished = time.perf_counter()
    seconds = finished - began
    # Sustained: from the first batch answered to the last (joining the group is not ingest).
    assert sink.first_answer is not None
    rate = (args.records - sink.first_batch) / max(1e-9, finished - sink.first_answer)
    latency = await measure_latency(bootstrap, run, sink, rate, args)
    recalled = await recall_sample(brain, run)
    await driver.stop(5.0)
    await task
    return {
        "consumer": "kafka driver (batch_size 500, commit after store)",
        "records": args.records,
        "seconds_including_group_join": round(seconds, 3),
        "records_per_s_including_group_join": round(args.records / seconds, 1),
        "records_per_s": round(rate, 1),
        "latency": latency,
        "sample_recalled": recalled,
    }


async def run_naive(brain: Astrocyte, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """One record at a time with the consumer's auto-commit (a failed retain would be lost)."""
    run = f"naive-{uuid.uuid4().hex[:8]}"
    await new_topic(bootstrap, run)
    await fill(bootstrap, run, run, args.naive_records)
    decoder = RecordDecoder(RecordMapping(), IdempotencyKey(), 1_048_576)
    sink = TimedSink(IngestSink(brain, source_id="naive"))
    consumer = AIOKafkaConsumer(
        run, bootstrap_servers=bootstrap, group_id=run, enable_auto_commit=True, auto_offset_reset="earliest"
    )
    began = time.perf_counter()
    await consumer.start()
    try:
        while sink.stored < args.naive_records:
            record = await consumer.getone()
            await sink.submit([decoder.decode(record)])
        seconds = time.perf_counter() - began
    finally:
        await consumer.stop()
    return {
        "consumer": "naive (getone, one record per submit, auto-commit)",
        "records": args.naive_records,
        "seconds": round(seconds, 3),
        "records_per_s": round(args.naive_records / seconds, 1),
    }


async def measure_latency(
    bootstrap: str, topic: str, sink: TimedSink, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Send at ``args.latency_load`` x the measured rate for ``args.latency_seconds``; send -> stored."""
    per_second = max(5.0, rate * args.latency_load)
    tick = 0.01
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: list[tuple[float, asyncio.Future[Any]]] = []
    carry = 0.0
    index = 10_000_000
    ends = time.perf_counter() + args.latency_seconds
    try:
        while time.perf_counter() < ends:
            carry += per_second * tick
            while carry >= 1:
                carry -= 1
                sent.append((time.perf_counter(), await producer.send(topic, value(index, topic))))
                index += 1
            await asyncio.sleep(tick)
        metas = await asyncio.gather(*(future for _, future in sent))
    finally:
        await producer.stop()
    produced = {f"{m.topic}:{m.partition}:{m.offset}": t for (t, _), m in zip(sent, metas, strict=True)}
    deadline = time.perf_counter() + 60
    while any(key not in sink.stored_at for key in produced) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    samples = sorted((sink.stored_at[k] - t) * 1000 for k, t in produced.items() if k in sink.stored_at)
    return {
        "produce_rate_per_s": round(per_second, 1),
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples), 2) if samples else None,
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2) if samples else None,
    }


async def recall_sample(brain: Astrocyte, run: str) -> bool:
    """Recall a few stored records (backlog and latency phase): stored means recallable."""
    for index in (0, 7, 10_000_000):
        result = await brain.recall(sentence(index, run), bank_id=run, max_results=5)
        if not any(hit.text == sentence(index, run) for hit in result.hits):
            return False
    return True


async def bench_store(engine: dict[str, Any], bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    async with Astrocyte.from_dict(engine) as brain:
        bank = f"bench-warmup-{uuid.uuid4().hex[:8]}"  # first-use setup paid by neither consumer
        await brain.retain_many([RetainRequest(content=sentence(i, bank), bank_id=bank) for i in range(500)])
        ceiling = await engine_only(brain, args)
        driver = await run_driver(brain, bootstrap, args)
        naive = await run_naive(brain, bootstrap, args)
    return {
        "engine_only_retain_many_500_per_s": ceiling,
        "driver": driver,
        "naive": naive,
        "speedup": round(driver["records_per_s"] / naive["records_per_s"], 1),
    }


async def engine_only(brain: Astrocyte, args: argparse.Namespace) -> float:
    """The engine without Kafka, same records, ``retain_many`` in batches of 500: the ceiling the
    driver cannot beat (what is left is what the driver itself costs)."""
    bank = f"bench-engine-{uuid.uuid4().hex[:8]}"
    requests = [RetainRequest(content=sentence(i, bank), bank_id=bank) for i in range(args.records // 2)]
    began = time.perf_counter()
    for start in range(0, len(requests), 500):
        await brain.retain_many(requests[start : start + 500])
    return round(len(requests) / (time.perf_counter() - began), 1)


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # only needed with PostgreSQL

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = args.bootstrap or os.environ.get("ASTROCYTE_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit("set ASTROCYTE_TEST_KAFKA_BOOTSTRAP or pass --bootstrap")
    workdir = Path(tempfile.mkdtemp(prefix="kafka-ingest-bench-"))
    stores: dict[str, dict[str, Any]] = {
        "sqlite": {"store": "sqlite", "store_config": {"path": str(workdir / "bench.db")}},
    }
    dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    schema = f"kafka_bench_{uuid.uuid4().hex[:8]}"  # a schema of its own, dropped afterwards
    if dsn:
        stores["postgres"] = {"store": "postgres", "store_config": {"dsn": dsn, "schema": schema}}
    results: dict[str, Any] = {}
    selected = args.stores or list(stores)
    try:
        for name in selected:
            results[name] = await bench_store({**stores[name], "embedder": "hashing"}, bootstrap, args)
    finally:
        if "postgres" in selected and dsn:
            await drop_schema(dsn, schema)
        shutil.rmtree(workdir, ignore_errors=True)
    sqlite = results.get("sqlite")
    return {
        "benchmark": "kafka_ingest",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "note": "shared machine: other work runs at the same time, figures vary between runs",
        },
        "settings": {"records": args.records, "naive_records": args.naive_records, "partitions": PARTITIONS,
                     "latency_seconds": args.latency_seconds, "latency_load": args.latency_load,
                     "embedder": "hashing", "bootstrap": bootstrap},
        "stores": results,
        "targets": {
            "sqlite_records_per_s_at_least_10000": bool(sqlite and sqlite["driver"]["records_per_s"] >= 10_000),
            "sqlite_speedup_at_least_10x": bool(sqlite and sqlite["speedup"] >= 10),
        },
    }  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=30_000, help="backlog for the driver")
    parser.add_argument("--naive-records", type=int, default=1_500, help="backlog for the naive consumer")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--latency-load", type=float, default=0.5, help="produce rate as a share of throughput"
    )
    parser.add_argument("--stores", type=lambda s: s.split(","), default=None, help="sqlite,postgres")
    parser.add_argument("--bootstrap", default=None, help="host:port of a broker")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args())), indent=2))
