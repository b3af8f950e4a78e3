"""How long concurrent first writes to a fresh PostgreSQL store take (its embedding size not yet
known): ``--replicas`` stores on one new schema submit ``--batches`` batches of ``--batch`` records,
at most ``--concurrency`` at a time (default: all at once). With ``--duplicates F``, that fraction
of the records repeat an idempotency key sent in another batch (shuffled, as the ingest sink test
does), so concurrent batches collide on keys the other has not committed yet. Prints one JSON
document: seconds per run, the median, failures, and whether exactly one memory per key was kept.

    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... scripts/bench postgres_first_writes [--runs 3]
    scripts/bench postgres_first_writes --batches 8 --duplicates 0.2   # 8 first batches, overlapping

Each run uses a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid

import asyncpg
import numpy as np
from astrocyte.stores.postgres import PostgresStore
from astrocyte.types import Chunk, InsertOutcome, MemoryRecord


def _keys(total: int, duplicates: float, seed: int) -> list[str]:
    """``total`` idempotency keys, of which ``duplicates`` (a fraction) repeat another one."""
    rng = random.Random(seed)
    unique = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(total - round(total * duplicates))]
    order = unique + [rng.choice(unique) for _ in range(total - len(unique))]
    rng.shuffle(order)
    return order


def _batch(bank: str, keys: list[str], dims: int, rng: np.random.Generator) -> list[MemoryRecord]:
    vectors = rng.normal(size=(len(keys), dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        MemoryRecord(
            memory_id=uuid.uuid4().hex,
            bank_id=bank,
            text=f"note {key}",
            chunks=(Chunk(0, f"note {key}", vectors[i]),),
            idempotency_key=key,
        )
        for i, key in enumerate(keys)
    ]


async def _run(dsn: str, args: argparse.Namespace, seed: int) -> dict[str, float | int]:
    schema = f"astrocyte_first_{uuid.uuid4().hex[:10]}"
    replicas = [
        PostgresStore({"dsn": dsn, "schema": schema, "min_pool_size": 0}) for _ in range(args.replicas)
    ]
    await asyncio.gather(*(r.open() for r in replicas))
    rng = np.random.default_rng(seed)
    keys = _keys(args.batches * args.batch, args.duplicates, seed)
    batches = [
        _batch("first", keys[i : i + args.batch], args.dims, rng) for i in range(0, len(keys), args.batch)
    ]
    gate = asyncio.Semaphore(args.concurrency or len(batches))
    latencies: list[float] = []  # per batch, from its turn to its answer (what a timeout bounds)

    async def submit(index: int, batch: list[MemoryRecord]) -> list[InsertOutcome]:
        async with gate:
            began = time.perf_counter()
            try:
                return await replicas[index % len(replicas)].insert(batch)
            finally:
                latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    results = await asyncio.gather(*(submit(i, b) for i, b in enumerate(batches)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(r.close() for r in replicas))
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval(f'SELECT count(*) FROM "{schema}".memories')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    ids_per_key: dict[str, set[str]] = {}
    deduplicated = 0
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, BaseException):
            continue
        for record, outcome in zip(batch, result, strict=True):
            ids_per_key.setdefault(str(record.idempotency_key), set()).add(outcome.memory_id)
            deduplicated += outcome.deduplicated
    return {
        "seconds": round(elapsed, 3),
        "batch_seconds_p50": round(statistics.median(latencies), 3),
        "batch_seconds_max": round(max(latencies), 3),
        "failed_batches": len(failed),
        "errors": sorted({type(e).__name__ for e in failed}),
        "stored": int(stored),
        "deduplicated": deduplicated,
        "one_memory_per_key": all(len(ids) == 1 for ids in ids_per_key.values()),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=0, help="batches in flight (0: all)")
    parser.add_argument("--duplicates", type=float, default=0.0, help="fraction of repeated keys")
    args = parser.parse_args()
    dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    if not dsn:
        print('set ASTROCYTE_TEST_POSTGRES_DSN (eval "$(scripts/services env)")', file=sys.stderr)
        return 2
    runs = [await _run(dsn, args, seed) for seed in range(args.runs)]
    print(
        json.dumps(
            {
                "benchmark": "postgres_first_writes",
                "replicas": args.replicas,
                "batches": args.batches,
                "batch": args.batch,
                "dims": args.dims,
                "concurrency": args.concurrency or args.batches,
                "duplicates": args.duplicates,
                "runs": runs,
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "median_batch_seconds_max": statistics.median(r["batch_seconds_max"] for r in runs),
                "expected_stored": args.batches * args.batch
                - round(args.batches * args.batch * args.duplicates),
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
