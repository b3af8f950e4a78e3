"""Recall on the PostgreSQL store at one bank size, with pgvector's HNSW index (384 dims).

Fills one bank of ``--size`` memories through ``PostgresStore.insert`` (batches of ``--batch``,
``--writers`` at a time) with tie-free ``latent`` vectors (see ``core_recall.tie_free``) and short
sentences, the HNSW index built after the fill (``--build after``, with ``--maintenance-work-mem``)
or kept up while filling (``--build during``). Then, from one client, for each ``--ef-search``:

- vector search latency p50/p95/p99 (k=10) for unseen query vectors, and the same queries' index
  recall@10 against an exact scan of the bank (``--exact-queries`` of them);
- hit@1 when the query is a stored vector (identity rule) and when it is a stored text (keyword
  search's exact-text rule), and the latency of the pair run together, as ``recall`` runs them.

Prints one JSON document with fill rate, index build time, table and index sizes, the server's
settings and the load average. Uses a schema of its own, dropped afterwards.

    eval "$(scripts/services env)"
    scripts/bench postgres_recall --size 100000
    flock -w 1500 -x /tmp/astrocyte-heavy.lock scripts/bench postgres_recall --size 1000000 --ef-search 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from typing import Any

import asyncpg
import numpy as np
from astrocyte.stores.postgres import PostgresStore
from astrocyte.types import Chunk, MemoryRecord, SearchFilters

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import core_recall

BANK = "recall-bank"
NO_FILTERS = SearchFilters()
SETTINGS = (
    "shared_buffers",
    "effective_cache_size",
    "maintenance_work_mem",
    "work_mem",
    "max_parallel_maintenance_workers",
    "max_parallel_workers",
)


def _records(start: int, vectors: np.ndarray, texts: list[str]) -> list[MemoryRecord]:
    return [
        MemoryRecord(
            memory_id=uuid.uuid4().hex,
            bank_id=BANK,
            text=text,
            chunks=(Chunk(0, text, vector),),
            idempotency_key=f"m-{start + i}",
        )
        for i, (vector, text) in enumerate(zip(vectors, texts, strict=True))
    ]


async def _fill(
    store: PostgresStore, size: int, args: argparse.Namespace, basis: np.ndarray
) -> tuple[float, list[np.ndarray], list[str]]:
    """Fill the bank; returns the seconds it took and a sample of stored vectors and texts."""
    rng = np.random.default_rng(1)
    words = random.Random(2)
    sample_vectors: list[np.ndarray] = []
    sample_texts: list[str] = []
    gate = asyncio.Semaphore(args.writers)
    every = max(1, size // args.queries)

    async def write(start: int) -> None:
        count = min(args.batch, size - start)
        async with gate:
            vectors = core_recall.tie_free(rng, basis, "latent", count)
            texts = [f"{core_recall.sentence(words)} (note {start + i})" for i in range(count)]
            for i in range(count):
                if (start + i) % every == 0:
                    sample_vectors.append(vectors[i])
                    sample_texts.append(texts[i])
            await store.insert(_records(start, vectors, texts))
            if (start // args.batch) % 50 == 0:
                print(f"filled {start + count}/{size}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(write(start) for start in range(0, size, args.batch)))
    return time.perf_counter() - started, sample_vectors, sample_texts


async def _build_index(conn: asyncpg.Connection, args: argparse.Namespace) -> float:
    await conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    await conn.execute(f"SET max_parallel_maintenance_workers = {int(args.build_workers)}")
    started = time.perf_counter()
    await conn.execute(
        "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )
    return time.perf_counter() - started


def _percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(core_recall.percentile(values, q) * 1000, 3) for q in (50, 95, 99)}


async def _measure(
    dsn: str,
    schema: str,
    ef_search: int,
    queries: np.ndarray,
    truth: list[set[str]],
    stored: tuple[list[np.ndarray], list[str]],
) -> dict[str, Any]:
    store = PostgresStore({"dsn": dsn, "schema": schema, "hnsw_ef_search": ef_search, "max_pool_size": 4})
    await store.open()
    try:
        for query in queries[:20]:  # warm the pool and the caches a little
            await store.vector_search([BANK], query, 10, NO_FILTERS)
        latencies, found = [], 0
        for i, query in enumerate(queries):
            began = time.perf_counter()
            hits = await store.vector_search([BANK], query, 10, NO_FILTERS)
            latencies.append(time.perf_counter() - began)
            if i < len(truth):
                found += len({h.memory_id for h in hits} & truth[i])
        vectors, texts = stored
        vector_first = keyword_first = 0
        pair: list[float] = []
        for vector, text in zip(vectors, texts, strict=True):
            began = time.perf_counter()
            by_vector, by_keyword = await asyncio.gather(
                store.vector_search([BANK], vector, 50, NO_FILTERS),
                store.keyword_search([BANK], text, 50, NO_FILTERS),
            )
            pair.append(time.perf_counter() - began)
            vector_first += bool(by_vector) and by_vector[0].text == text
            keyword_first += bool(by_keyword) and by_keyword[0].text == text
        return {
            "ef_search": ef_search,
            "vector_k10": _percentiles(latencies),
            "index_recall_at_10": round(found / (10 * len(truth)), 4) if truth else None,
            "stored_vector_hit_at_1": f"{vector_first}/{len(vectors)}",
            "stored_text_hit_at_1": f"{keyword_first}/{len(texts)}",
            "vector_and_keyword_k50": _percentiles(pair),
        }
    finally:
        await store.close()


async def _exact_truth(conn: asyncpg.Connection, queries: np.ndarray) -> list[set[str]]:
    truth = []
    for query in queries:
        rows = await conn.fetch(
            "SELECT memory_id FROM chunks WHERE bank_id = $2 ORDER BY (embedding <=> $1) + 0 LIMIT 10",
            query,
            BANK,
        )
        truth.append({row["memory_id"] for row in rows})
    return truth


async def _sizes(conn: asyncpg.Connection) -> dict[str, float]:
    """MB per table (heap and TOAST) and per index of the schema, and their total."""
    rows = await conn.fetch(
        "SELECT c.relname, CASE c.relkind WHEN 'r' THEN pg_table_size(c.oid) "
        "ELSE pg_relation_size(c.oid) END AS bytes FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
        "AND c.relkind IN ('r', 'i') ORDER BY bytes DESC"
    )
    sizes = {row["relname"]: round(row["bytes"] / 2**20, 1) for row in rows if row["bytes"] >= 2**17}
    return {**sizes, "total": round(sum(row["bytes"] for row in rows) / 2**20, 1)}


async def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"astrocyte_recall_{uuid.uuid4().hex[:10]}"
    basis = np.random.default_rng(0).standard_normal((24, 384))
    store = PostgresStore({"dsn": dsn, "schema": schema, "max_pool_size": args.writers + 1})
    await store.open()
    report: dict[str, Any] = {"size": args.size, "build": args.build}
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}", public'})
    try:
        from pgvector.asyncpg import register_vector

        await register_vector(conn)
        report["server"] = {
            name: await conn.fetchval("SELECT current_setting($1)", name) for name in SETTINGS
        }
        first = core_recall.tie_free(np.random.default_rng(9), basis, "latent", 1)
        await store.insert(_records(-1, first, ["the first memory"]))  # fixes the size, builds HNSW
        if args.build == "after":
            await conn.execute("DROP INDEX chunks_embedding_hnsw")
        seconds, *stored = await _fill(store, args.size - 1, args, basis)
        report["fill_seconds"] = round(seconds, 1)
        report["fill_per_second"] = round((args.size - 1) / seconds)
        if args.build == "after":
            report["index_build_seconds"] = round(await _build_index(conn, args), 1)
        await conn.execute("VACUUM ANALYZE chunks")
        await conn.execute("VACUUM ANALYZE memories")
        await store.close()
        report["sizes_mb"] = await _sizes(conn)
        queries = core_recall.tie_free(np.random.default_rng(5), basis, "latent", args.queries)
        started = time.perf_counter()
        truth = await _exact_truth(conn, queries[: args.exact_queries])
        report["exact_scan_ms_per_query"] = round(
            (time.perf_counter() - started) * 1000 / max(1, len(truth)), 1
        )
        report["by_ef_search"] = [
            await _measure(dsn, schema, ef, queries, truth, (stored[0], stored[1])) for ef in args.ef_search
        ]
    finally:
        await store.close()
        if not args.keep:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--build", choices=("after", "during"), default="after")
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--build-workers", type=int, default=1, help="parallel maintenance workers")
    parser.add_argument("--ef-search", type=lambda v: [int(x) for x in v.split(",")], default=[40, 100])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the schema (to inspect it)")
    return parser.parse_args()


async def main() -> int:
    args = parse_args()
    dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    if not dsn:
        print('set ASTROCYTE_TEST_POSTGRES_DSN (eval "$(scripts/services env)")', file=sys.stderr)
        return 2
    report = {"benchmark": "postgres_recall", "machine": core_recall.machine(), **await run(dsn, args)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
