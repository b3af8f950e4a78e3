"""Core recall benchmark: retain throughput and recall latency as a bank grows, per store.

    python benchmarks/core_recall.py                      # SQLite at 1k, 10k, 100k memories
    python benchmarks/core_recall.py --sizes 1000,10000   # smaller run
    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... python benchmarks/core_recall.py   # + PostgreSQL

Everything goes through the public API (``Astrocyte.from_dict``, ``retain``, ``retain_many``,
``recall``) with the offline ``hashing`` embedder. One bank grows through the sizes: at each size
the missing memories are loaded, part one ``retain`` call at a time (measured) and the rest with
``retain_many`` in batches (measured), then 200 queries are timed. Each store runs in its own child
process so its peak RSS is its own. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from astrocyte import Astrocyte
from astrocyte.types import RetainRequest

SEED = 20240601
BANK = "bench:core"

NAMES = (
    "Alice Bob Carla Dmitri Elena Farid Grace Hiro Ines Jonas Keiko Liam Maya Noor Oscar Priya Quentin "
    "Rosa Samir Tara Umar Vera Wen Xavier Yara Zoe Aditi Bruno Chloe Diego Emeka Fatima Gustav Hana Ivan "
    "Julia Kofi Lena Mateo Nadia Olga Pablo Rania Sven Tomas Ursula Viktor Wanda Yusuf Zara"
).split()
ROLES = (
    "the project manager|our landlord|the new intern|my sister|the support team|the CFO|"
    "the night nurse|the lead engineer|our neighbour|the hiring committee|the course tutor|"
    "the delivery driver|the research group|the sales lead|the accountant|the band"
).split("|")
VERBS = (
    "prefers ordered forgot recommended booked cancelled borrowed repaired painted reviewed "
    "shipped returned approved rejected photographed bought sold lost found renamed moved "
    "scheduled postponed measured cleaned installed packed translated cooked planted signed "
    "printed archived updated mentioned described"
).split()
ADJECTIVES = (
    "red quiet heavy cheap vintage spare broken shared urgent second blue wooden digital small "
    "annual fragile green private spicy electric old weekly frozen rented handmade draft final "
    "noisy leather organic"
).split()
NOUNS = (
    "bicycle invoice laptop contract kettle passport guitar sofa report ticket camera garden lamp "
    "budget recipe jacket printer tent piano server umbrella manuscript roadmap vaccine telescope "
    "spreadsheet fridge backpack license prototype drone microscope curtain toolbox keyboard "
    "playlist mortgage blender scooter notebook painting router helmet wallet charger violin "
    "aquarium battery canoe thermostat dashboard presentation suitcase lawnmower"
).split()
PLACES = (
    "in Lisbon|at the office|near the station|in the garage|at the warehouse|in Osaka|"
    "at the clinic|in the cellar|at the library|in Nairobi|at the conference|in Berlin|"
    "on the balcony|at the bakery|in Toronto|in the lab|at the airport|in Santiago"
).split("|")
TIMES = (
    "on Monday|last week|yesterday|this morning|in March|before the holidays|after lunch|"
    "on Friday night|two days ago|at the weekend|in the spring|last year"
).split("|")
TOPICS = (
    "the budget review|the team offsite|the kitchen renovation|the school trip|the product launch|"
    "the tax return|the wedding|the server migration|the marathon|the museum visit"
).split("|")
FEELINGS = ("loves", "dislikes", "is worried about", "is excited about", "keeps asking about", "forgot about")
TEMPLATES = (
    "{who} {verb} the {adj} {noun} {place} {time}.",
    "{who} {verb} a {adj} {noun} for {topic}.",
    "{time}, {who} {verb} the {noun} {place}.",
    "{who} {feel} the {adj} {noun} and {verb} it {time}.",
    "Note: {who} {verb} the {noun} {place}; follow up about {topic}.",
    "{who} said the {adj} {noun} {place} needs attention {time}.",
    "Remember that {who} {feel} {topic} and the {adj} {noun}.",
    "{who} and {who2} {verb} the {noun} {place} {time}.",
)
QUESTIONS = (
    "what did {name} do with the {noun}",
    "who {verb} the {adj} {noun}",
    "{noun} {place}",
    "what happened {place} {time}",
    "does {name} like the {noun}",
    "tell me about {topic} and the {noun}",
)


def sentence(rng: random.Random) -> str:
    """A short, varied, realistic-looking sentence."""
    person = lambda: rng.choice(NAMES) if rng.random() < 0.7 else rng.choice(ROLES)  # noqa: E731
    text = rng.choice(TEMPLATES).format(
        who=person(),
        who2=person(),
        verb=rng.choice(VERBS),
        adj=rng.choice(ADJECTIVES),
        noun=rng.choice(NOUNS),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
        topic=rng.choice(TOPICS),
        feel=rng.choice(FEELINGS),
    )
    return text[0].upper() + text[1:]


def question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(
        name=rng.choice(NAMES),
        noun=rng.choice(NOUNS),
        verb=rng.choice(VERBS),
        adj=rng.choice(ADJECTIVES),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
        topic=rng.choice(TOPICS),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def store_config(store: str, workdir: Path) -> dict[str, Any]:
    if store == "sqlite":
        return {"path": str(workdir / "bench.db")}
    dsn = os.environ["ASTROCYTE_TEST_POSTGRES_DSN"]
    return {"dsn": dsn, "schema": f"bench_{uuid.uuid4().hex[:10]}"}


def brain_config(store: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"store": store, "store_config": config, "embedder": "hashing"}


async def load(brain: Astrocyte, rng: random.Random, count: int, singles: int, batch: int) -> dict[str, Any]:
    """Add ``count`` memories: ``singles`` one call at a time, the rest batched. Returns rates."""
    result: dict[str, Any] = {}
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(singles):
        outcome = await brain.retain(sentence(rng), bank_id=BANK, tags=[rng.choice(TOPICS)])
        assert outcome.stored, outcome
    if singles:
        result["retain_single_per_s"] = round(singles / (time.perf_counter() - started), 1)
        result["retain_single_per_cpu_s"] = round(singles / (time.process_time() - cpu), 1)
        result["retain_single_calls"] = singles
    remaining = count - singles
    started, cpu = time.perf_counter(), time.process_time()
    while remaining > 0:
        size = min(batch, remaining)
        requests = [
            RetainRequest(content=sentence(rng), bank_id=BANK, tags=(rng.choice(TOPICS),))
            for _ in range(size)
        ]
        outcomes = await brain.retain_many(requests)
        failed = [o for o in outcomes if not getattr(o, "stored", False)]
        assert not failed, failed[:3]
        remaining -= size
    if count - singles:
        result["retain_batched_per_s"] = round((count - singles) / (time.perf_counter() - started), 1)
        result["retain_batched_per_cpu_s"] = round((count - singles) / (time.process_time() - cpu), 1)
        result["retain_batched_items"] = count - singles
    return result


async def measure_recall(brain: Astrocyte, queries: list[str]) -> dict[str, Any]:
    for query in queries[:10]:  # warm caches and code paths
        await brain.recall(query, bank_id=BANK)
    totals, searches, cpus = [], [], []
    for query in queries:
        started, cpu = time.perf_counter(), time.process_time()
        result = await brain.recall(query, bank_id=BANK)
        totals.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        searches.append(result.trace["timings_ms"]["search"])
    return {
        "recall_ms": {q: round(percentile(totals, p), 3) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
        "store_search_ms": {q: round(percentile(searches, p), 3) for q, p in (("p50", 50), ("p99", 99))},
        # CPU time of the process per recall (all threads): what the latency would be on an idle machine.
        "recall_cpu_ms": {q: round(percentile(cpus, p), 3) for q, p in (("p50", 50), ("p99", 99))},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def run_store(store: str, sizes: list[int], singles: int, batch: int, queries: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="astrocyte-bench-"))
    config = store_config(store, workdir)
    rng = random.Random(SEED)
    qs = [question(random.Random(SEED + i)) for i in range(queries)]
    stages: list[dict[str, Any]] = []
    held = 0
    try:
        async with Astrocyte.from_dict(brain_config(store, config)) as brain:
            for size in sizes:
                adding = size - held
                stage: dict[str, Any] = {"memories": size}
                stage.update(await load(brain, rng, adding, min(singles, adding // 2), batch))
                held = size
                stage.update(await measure_recall(brain, qs))
                stage["peak_rss_mb"] = peak_rss_mb()
                stages.append(stage)
                print(json.dumps({"store": store, **stage}), file=sys.stderr, flush=True)
        report: dict[str, Any] = {"stages": stages}
        if store == "sqlite":
            report.update(await reopen_times(config))
        return report
    finally:
        await cleanup(store, config)
        shutil.rmtree(workdir, ignore_errors=True)


async def reopen_times(config: dict[str, Any]) -> dict[str, Any]:
    """How long opening the full file takes, from the index snapshot and rebuilding from BLOBs."""
    timings = {}
    for label in ("open_with_snapshot_s", "open_rebuilding_index_s"):
        if label == "open_rebuilding_index_s":
            shutil.rmtree(config["path"] + ".vectors", ignore_errors=True)
        brain = Astrocyte.from_dict(brain_config("sqlite", config))
        started = time.perf_counter()
        await brain.start()
        timings[label] = round(time.perf_counter() - started, 3)
        await brain.close()
    return timings


async def cleanup(store: str, config: dict[str, Any]) -> None:
    if store != "postgres":
        return
    import asyncpg  # only needed when PostgreSQL is benchmarked

    try:
        conn = await asyncpg.connect(config["dsn"])
    except (OSError, asyncpg.PostgresError) as exc:  # never hide the run's own error behind this one
        print(f"cannot drop benchmark schema {config['schema']}: {exc}", file=sys.stderr)
        return
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{config["schema"]}" CASCADE')
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated bank sizes")
    parser.add_argument("--postgres-dsn", default=os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN"))
    parser.add_argument("--stores", default=None, help="comma-separated subset of sqlite,postgres")
    parser.add_argument(
        "--single-calls", type=int, default=2000, help="one-at-a-time retains per size, at most"
    )
    parser.add_argument("--batch", type=int, default=500, help="retain_many batch size for the bulk load")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if args.child:
        report = asyncio.run(run_store(args.child, sizes, args.single_calls, args.batch, args.queries))
        print(json.dumps(report))
        return
    stores = (
        args.stores.split(",") if args.stores else ["sqlite"] + (["postgres"] if args.postgres_dsn else [])
    )
    env = dict(os.environ)
    if args.postgres_dsn:
        env["ASTROCYTE_TEST_POSTGRES_DSN"] = args.postgres_dsn
    results: dict[str, Any] = {"machine": machine(), "sizes": sizes, "embedder": "hashing", "stores": {}}
    for store in stores:
        child = [
            sys.executable,
            __file__,
            "--child",
            store,
            "--sizes",
            args.sizes,
            "--single-calls",
            str(args.single_calls),
            "--batch",
            str(args.batch),
            "--queries",
            str(args.queries),
        ]
        done = subprocess.run(child, env=env, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:  # one store failing (a database gone away) keeps the others' figures
            results["stores"][store] = {
                "error": f"benchmark process exited with {done.returncode}; see stderr"
            }
            continue
        results["stores"][store] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
