"""Probe PostgresStore search latency and vector recall as a bank grows (hashing embedder, 384 dims).

Fills one bank in steps (default 10k then 100k memories) through ``PostgresStore.insert`` and, at
each step, times what recall does per query: vector and keyword search for ``k`` candidates, run
concurrently, on the sentences and questions of ``core_recall.py``. Prints p50/p99 per arm and for
the pair, the vector arm's recall@10 against an exact scan, and the vector arm's query plan.

    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... python benchmarks/postgres_store_probe.py \
        [--steps 10000,100000] [--queries 300] [--k 50] [--keep]

Uses a schema of its own (``astrocyte_probe``), dropped afterwards unless ``--keep`` is given (then
a second run reuses the rows already loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from astrocyte.embedders.hashing import HashingEmbedder
from astrocyte.stores.postgres import PostgresStore
from astrocyte.types import Chunk, MemoryRecord, SearchFilters

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core_recall

BANK = "probe-bank"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _sentences(count: int, rng: random.Random) -> list[str]:
    return [core_recall.sentence(rng) for _ in range(count)]


async def _fill(store: PostgresStore, embedder: HashingEmbedder, have: int, want: int, seed: int) -> None:
    rng = random.Random(seed)
    started = time.perf_counter()
    for start in range(have, want, 1000):
        texts = _sentences(min(1000, want - start), rng)
        vectors = embedder.embed_sync(texts)
        records = [
            MemoryRecord(
                memory_id=uuid.uuid4().hex,
                bank_id=BANK,
                text=text,
                chunks=(Chunk(0, text, vectors[i]),),
                tags=(("even",) if (start + i) % 2 == 0 else ("odd",)) + (rng.choice(core_recall.TOPICS),),
                occurred_at=T0 + timedelta(minutes=start + i),
            )
            for i, text in enumerate(texts)
        ]
        await store.insert(records)
    elapsed = time.perf_counter() - started
    print(f"loaded {want - have} memories in {elapsed:.1f}s ({(want - have) / max(elapsed, 1e-9):.0f}/s)")


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _measure(
    store: PostgresStore, embedder: HashingEmbedder, queries: int, k: int, filters: SearchFilters
):
    texts = [core_recall.question(random.Random(core_recall.SEED + i)) for i in range(queries)]
    vectors = embedder.embed_sync(texts)
    vec_ms, kw_ms, pair_ms = [], [], []
    for text, vector in zip(texts, vectors, strict=True):
        t0 = time.perf_counter()
        v_task = asyncio.create_task(_timed(store.vector_search([BANK], vector, k, filters)))
        k_task = asyncio.create_task(_timed(store.keyword_search([BANK], text, k, filters)))
        (v_elapsed, v_hits), (k_elapsed, _) = await asyncio.gather(v_task, k_task)
        pair_ms.append((time.perf_counter() - t0) * 1000)
        vec_ms.append(v_elapsed)
        kw_ms.append(k_elapsed)
        assert len(v_hits) == k, f"vector arm returned {len(v_hits)} of {k}"
    return vec_ms, kw_ms, pair_ms


async def _timed(awaitable):
    t0 = time.perf_counter()
    result = await awaitable
    return (time.perf_counter() - t0) * 1000, result


def _report(label: str, values: list[float]) -> None:
    print(
        f"  {label:<8} p50 {_pct(values, 50):6.2f} ms   p99 {_pct(values, 99):6.2f} ms   max {max(values):6.2f} ms"
    )


async def _recall_at_10(store: PostgresStore, embedder: HashingEmbedder, queries: int) -> float:
    """Share of the exact top 10 (by distance, ties counted as found) that the vector arm returns."""
    texts = [core_recall.question(random.Random(7 + i)) for i in range(queries)]
    found = 0.0
    for vector in embedder.embed_sync(texts):
        hits = await store.vector_search([BANK], vector, 10, SearchFilters())
        async with store._connection() as conn:
            exact = await conn.fetch(
                "SELECT 1 - ((embedding <=> $1) + 0) AS score FROM chunks WHERE bank_id = $2 "
                "ORDER BY (embedding <=> $1) + 0 LIMIT 10",
                vector,
                BANK,
            )
        tenth = exact[-1]["score"]
        found += min(10, sum(h.score >= tenth - 1e-6 for h in hits)) / 10
    return found / queries


async def _explain(store: PostgresStore, embedder: HashingEmbedder, k: int) -> None:
    vector = embedder.embed_sync(["probe query words"])[0]
    async with store._connection() as conn:
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) SELECT memory_id FROM chunks WHERE bank_id = ANY($2::text[]) "
            "ORDER BY embedding <=> $1 LIMIT $3",
            vector,
            [BANK],
            k,
        )
    print("\n".join("    " + row[0] for row in rows))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--ef-search", type=int, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    dsn = os.environ["ASTROCYTE_TEST_POSTGRES_DSN"]
    config = {"dsn": dsn, "schema": "astrocyte_probe", "max_pool_size": 4}
    if args.ef_search:
        config["hnsw_ef_search"] = args.ef_search
    store = PostgresStore(config)
    embedder = HashingEmbedder({"dimensions": 384})
    await store.open()
    try:
        for step in (int(s) for s in args.steps.split(",")):
            have = await store.count([BANK], SearchFilters())
            if have < step:
                await _fill(store, embedder, have, step, seed=have)
            async with store._connection() as conn:
                await conn.execute("ANALYZE chunks; ANALYZE memories")
            await _measure(store, embedder, 30, args.k, SearchFilters())  # warm caches and plans
            print(f"{step} memories, k={args.k}, {args.queries} queries")
            for label, filters in (
                ("plain", SearchFilters()),
                ("tag 50%", SearchFilters(tags=("odd",))),
                (
                    "window",
                    SearchFilters(
                        start=T0 + timedelta(minutes=step // 2), end=T0 + timedelta(minutes=step // 2 + 500)
                    ),
                ),
            ):
                vec, kw, pair = await _measure(store, embedder, args.queries, args.k, filters)
                print(f" filter: {label}")
                _report("vector", vec)
                _report("keyword", kw)
                _report("both", pair)
            print(f" vector recall@10 vs exact: {await _recall_at_10(store, embedder, 50):.3f}")
            await _explain(store, embedder, args.k)
    finally:
        await store.close()
        if not args.keep:
            conn = await asyncpg.connect(dsn)
            await conn.execute('DROP SCHEMA IF EXISTS "astrocyte_probe" CASCADE')
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
