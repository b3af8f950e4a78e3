"""How long concurrent first writes to a fresh PostgreSQL store take (its embedding size not yet
known): ``--replicas`` stores on one new schema each submit ``--batches`` batches of ``--batch``
records at once. Prints one JSON document: seconds per run, the median, and failures.

    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... scripts/bench postgres_first_writes [--runs 3]

Each run uses a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

import asyncpg
import numpy as np
from astrocyte.stores.postgres import PostgresStore
from astrocyte.types import Chunk, MemoryRecord


def _batch(bank: str, size: int, dims: int, rng: np.random.Generator) -> list[MemoryRecord]:
    vectors = rng.normal(size=(size, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        MemoryRecord(
            memory_id=uuid.uuid4().hex,
            bank_id=bank,
            text=f"note {i}",
            chunks=(Chunk(0, f"note {i}", vectors[i]),),
            idempotency_key=uuid.uuid4().hex,
        )
        for i in range(size)
    ]


async def _run(dsn: str, args: argparse.Namespace, seed: int) -> dict[str, float | int]:
    schema = f"astrocyte_first_{uuid.uuid4().hex[:10]}"
    replicas = [
        PostgresStore({"dsn": dsn, "schema": schema, "min_pool_size": 0}) for _ in range(args.replicas)
    ]
    await asyncio.gather(*(r.open() for r in replicas))
    rng = np.random.default_rng(seed)
    batches = [_batch("first", args.batch, args.dims, rng) for _ in range(args.batches)]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(replicas[i % len(replicas)].insert(b) for i, b in enumerate(batches)), return_exceptions=True
    )
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(r.close() for r in replicas))
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval(f'SELECT count(*) FROM "{schema}".memories')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    failed = sum(isinstance(r, BaseException) for r in results)
    return {"seconds": round(elapsed, 3), "failed_batches": failed, "stored": int(stored)}


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3)
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
                "runs": runs,
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "expected_stored": args.batches * args.batch,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
