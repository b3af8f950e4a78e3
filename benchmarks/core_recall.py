"""Core recall benchmark: retain throughput, recall latency and recall quality as a bank grows.

    python benchmarks/core_recall.py                      # SQLite at 1k, 10k, 100k memories
    python benchmarks/core_recall.py --sizes 10000,100000,1000000 --runs 3   # 1M once, others x3
    ASTROCYTE_TEST_POSTGRES_DSN=postgresql://... python benchmarks/core_recall.py   # + PostgreSQL

Everything goes through the public API (``Astrocyte.from_dict``, ``retain``, ``retain_many``,
``recall``) with the offline ``hashing`` embedder. One bank grows through the sizes: at each size
the missing memories are loaded, part one ``retain`` call at a time (measured) and the rest with
``retain_many`` in batches (measured), then 200 question queries are timed and 200 stored
memories' own texts are recalled (self-retrieval: is the memory hit 1, within the first 5?).
Each store runs in its own child process so its peak RSS is its own; the SQLite file is then
reopened (from the index snapshot, and rebuilding the index) and its size on disk reported.

Index recall@10 against exact search is measured apart, in its own process, on vectors without
ties (the hashing embedder's template texts tie): the store's vector index with its default
settings, asked for as many candidates as a default recall asks (60, rescored exactly), over
``latent`` vectors (a 24-dimensional latent mapped into 384 dimensions plus noise: shaped like text
embeddings) and over ``random`` unit vectors (no neighbourhood structure at all: the worst case;
up to 100k only, it is far from 0.99 already at 10k).

``--runs N`` repeats the whole run N times (sizes up to ``--repeat-max`` only, after the first)
and reports the median of every figure, with how many runs each stage had. Prints one JSON document.
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
import statistics
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


class Sample:
    """A uniform sample (reservoir) of the stored memories: ``(text, memory_id)``."""

    def __init__(self, size: int) -> None:
        self.size, self.seen, self.items = size, 0, []  # type: tuple[int, int, list[tuple[str, str]]]
        self._rng = random.Random(SEED + 1)

    def offer(self, text: str, memory_id: str) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append((text, memory_id))
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.items[slot] = (text, memory_id)


async def load(
    brain: Astrocyte, rng: random.Random, count: int, singles: int, batch: int, sample: Sample
) -> dict[str, Any]:
    """Add ``count`` memories: ``singles`` one call at a time, the rest batched. Returns rates."""
    result: dict[str, Any] = {}
    fill_started = time.perf_counter()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(singles):
        text = sentence(rng)
        outcome = await brain.retain(text, bank_id=BANK, tags=[rng.choice(TOPICS)])
        assert outcome.stored, outcome
        sample.offer(text, outcome.memory_id)
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
        for request, outcome in zip(requests, outcomes, strict=True):
            sample.offer(request.content, outcome.memory_id)  # type: ignore[union-attr]
        remaining -= size
    if count - singles:
        result["retain_batched_per_s"] = round((count - singles) / (time.perf_counter() - started), 1)
        result["retain_batched_per_cpu_s"] = round((count - singles) / (time.process_time() - cpu), 1)
        result["retain_batched_items"] = count - singles
    if count:
        result["fill_per_s"] = round(count / (time.perf_counter() - fill_started), 1)
    return result


async def measure_self_retrieval(brain: Astrocyte, sample: Sample) -> dict[str, Any]:
    """Recall each sampled memory by its own text: is it the first hit, within the first five?
    A first hit with the same text (the corpus repeats ~1 text in 5,000) counts as the memory."""
    first = within_five = 0
    totals = []
    for text, memory_id in sample.items:
        started = time.perf_counter()
        result = await brain.recall(text, bank_id=BANK, max_results=5)
        totals.append((time.perf_counter() - started) * 1000)
        ids = [hit.memory_id for hit in result.hits]
        first += bool(ids) and (ids[0] == memory_id or result.hits[0].text == text)
        within_five += memory_id in ids
    count = max(1, len(sample.items))
    return {
        "self_retrieval": {
            "queries": len(sample.items),
            "hit_at_1": round(first / count, 4),
            "hit_at_5": round(within_five / count, 4),
            "recall_ms_p99": round(percentile(totals, 99), 3) if totals else None,
        }
    }


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


async def run_store(
    store: str, sizes: list[int], singles: int, batch: int, queries: int, rebuild_max: int
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="astrocyte-bench-"))
    config = store_config(store, workdir)
    rng = random.Random(SEED)
    qs = [question(random.Random(SEED + i)) for i in range(queries)]
    stages: list[dict[str, Any]] = []
    held = 0
    sample = Sample(queries)
    try:
        async with Astrocyte.from_dict(brain_config(store, config)) as brain:
            for size in sizes:
                adding = size - held
                stage: dict[str, Any] = {"memories": size}
                stage.update(await load(brain, rng, adding, min(singles, adding // 2), batch, sample))
                held = size
                stage.update(await measure_recall(brain, qs))
                stage.update(await measure_self_retrieval(brain, sample))
                stage["peak_rss_mb"] = peak_rss_mb()
                stage["current_rss_mb"] = current_rss_mb()
                stages.append(stage)
                print(json.dumps({"store": store, **stage}), file=sys.stderr, flush=True)
        report: dict[str, Any] = {"stages": stages}
        if store == "sqlite":
            report["file_mb"] = files_mb(Path(config["path"]))
            report.update(await reopen_times(config, rebuild=sizes[-1] <= rebuild_max))
        return report
    finally:
        await cleanup(store, config)
        shutil.rmtree(workdir, ignore_errors=True)


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return -1.0


def files_mb(path: Path) -> dict[str, float]:
    """Sizes on disk: the database (with its WAL) and the index snapshot directory."""
    database = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    snapshot = path.with_name(path.name + ".vectors")
    vectors = sum(p.stat().st_size for p in snapshot.glob("*")) if snapshot.exists() else 0
    return {"database": round(database / 2**20, 1), "index_snapshot": round(vectors / 2**20, 1)}


async def reopen_times(config: dict[str, Any], rebuild: bool) -> dict[str, Any]:
    """How long opening the full file takes (and its first recall): from the index snapshot; after
    a crash (a process that wrote 1,000 memories and forgot 100 was killed: the snapshot is stale
    and is brought up to date, not rebuilt); and, when ``rebuild``, rebuilding the index from BLOBs."""
    timings: dict[str, Any] = {}
    for label in ("open_with_snapshot_s", "open_after_crash_s", "open_rebuilding_index_s"):
        if label == "open_after_crash_s":
            crash_after_writes(config)
        if label == "open_rebuilding_index_s":
            if not rebuild:
                timings[label] = None
                break
            shutil.rmtree(config["path"] + ".vectors", ignore_errors=True)
        brain = Astrocyte.from_dict(brain_config("sqlite", config))
        started = time.perf_counter()
        await brain.start()
        timings[label] = round(time.perf_counter() - started, 3)
        if label == "open_with_snapshot_s":
            started = time.perf_counter()
            await brain.recall("who moved the red lamp", bank_id=BANK)
            timings["first_recall_after_open_ms"] = round((time.perf_counter() - started) * 1000, 3)
            timings["rss_after_open_mb"] = current_rss_mb()
        await brain.close()
    return timings


CRASH = """
import asyncio, os, random, sys
sys.path.insert(0, {here!r})
from core_recall import BANK, SEED, brain_config, sentence
from astrocyte import Astrocyte
from astrocyte.types import RetainRequest

async def main():
    brain = Astrocyte.from_dict(brain_config("sqlite", {config!r}))
    await brain.start()
    rng = random.Random(SEED + 2)
    done = await brain.retain_many([RetainRequest(content=sentence(rng), bank_id=BANK) for _ in range(1000)])
    await brain.forget(BANK, memory_ids=[o.memory_id for o in done[:100]])
    os._exit(0)  # no close: the snapshot on disk stays as it was, as after a crash

asyncio.run(main())
"""


def crash_after_writes(config: dict[str, Any]) -> None:
    """Write to the file from a process that then dies without closing the store."""
    script = CRASH.format(here=str(Path(__file__).parent), config=config)
    subprocess.run([sys.executable, "-c", script], check=True)


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


def tie_free(rng: Any, basis: Any, family: str, count: int) -> Any:
    """``count`` unit vectors of 384 dims: ``latent`` (through ``basis``, plus noise) or ``random``."""
    import numpy as np

    if family == "latent":
        rows = rng.standard_normal((count, basis.shape[0])) @ basis + 0.05 * rng.standard_normal((count, 384))
    else:
        rows = rng.standard_normal((count, 384))
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def index_recall(sizes: list[int], queries: int = 200) -> dict[str, Any]:
    """Recall@10 of the SQLite store's vector index (default settings, 60 candidates rescored
    exactly, as a default recall asks) against exact search, on tie-free vectors."""
    import numpy as np
    from astrocyte.stores._vector_index import IndexSettings, VectorIndex
    from astrocyte.stores.sqlite import SQLiteStoreConfig

    defaults = SQLiteStoreConfig(path="unused")
    settings = IndexSettings(
        connectivity=defaults.index_connectivity,
        expansion_add=defaults.index_expansion_add,
        expansion_search=defaults.index_expansion_search,
        dtype=defaults.index_dtype,
        exact_below=defaults.index_exact_max,
    )
    out: dict[str, Any] = {
        "candidates": 60,
        "settings": {k: getattr(settings, k) for k in settings.__slots__},
    }
    for family in ("latent", "random"):
        rng = np.random.default_rng(SEED)
        basis = rng.standard_normal((24, 384))

        questions = tie_free(rng, basis, family, queries)
        vectors = np.empty((0, 384), dtype=np.float32)
        index = VectorIndex(settings)
        results = []
        try:
            for size in sizes if family == "latent" else [size for size in sizes if size <= 100_000]:
                fresh = tie_free(rng, basis, family, size - len(vectors))
                started = time.perf_counter()
                index.add("b", list(range(len(vectors), size)), fresh, bulk=True)
                built = time.perf_counter() - started
                vectors = np.concatenate([vectors, fresh])
                truth = np.argsort(-(questions @ vectors.T), axis=1)[:, :10]
                found, took = 0, []
                for question_vector, true in zip(questions, truth, strict=True):
                    started = time.perf_counter()
                    keys = np.asarray(index.search(["b"], question_vector, 60), dtype=np.int64)
                    best = keys[np.argsort(-(vectors[keys] @ question_vector))[:10]]
                    took.append((time.perf_counter() - started) * 1000)
                    found += len(set(best.tolist()) & set(true.tolist()))
                results.append(
                    {
                        "vectors": size,
                        "recall_at_10": round(found / truth.size, 4),
                        "search_ms_p50": round(percentile(took, 50), 3),
                        "search_ms_p99": round(percentile(took, 99), 3),
                        "add_s": round(built, 1),
                    }
                )
                print(json.dumps({"index_recall": family, **results[-1]}), file=sys.stderr, flush=True)
        finally:
            index.close()
        out[family] = results
    return out


def median_of(runs: list[Any]) -> Any:
    """The median of every number across runs of one report shape (other values from the first)."""
    first = runs[0]
    if isinstance(first, dict):
        return {
            key: median_of([run[key] for run in runs if isinstance(run, dict) and key in run])
            for key in first
        }
    if isinstance(first, list):
        return [median_of([run[i] for run in runs if i < len(run)]) for i in range(len(first))]
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    numbers = [run for run in runs if isinstance(run, int | float)]
    return round(statistics.median(numbers), 4) if len(numbers) > 1 else first


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several: each stage the median over the runs that reached it."""
    stages = []
    for position in range(len(runs[0]["stages"])):
        same = [run["stages"][position] for run in runs if len(run["stages"]) > position]
        stages.append({**median_of(same), "runs": len(same)})
    whole = [run for run in runs if len(run["stages"]) == len(runs[0]["stages"])]
    merged = median_of([{k: v for k, v in run.items() if k != "stages"} for run in whole])
    return {"stages": stages, **merged, "runs_of_the_largest_size": len(whole)}


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
    parser.add_argument("--runs", type=int, default=1, help="repeat and report medians")
    parser.add_argument(
        "--repeat-max", type=int, default=100_000, help="runs after the first stop at this size"
    )
    parser.add_argument(
        "--rebuild-max", type=int, default=100_000, help="time an index rebuild on reopen up to this size"
    )
    parser.add_argument("--skip-index-recall", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    if args.child == "index":
        print(json.dumps(index_recall(sizes)))
        return
    if args.child:
        report = asyncio.run(
            run_store(args.child, sizes, args.single_calls, args.batch, args.queries, args.rebuild_max)
        )
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
        runs = []
        for run in range(max(1, args.runs)):
            run_sizes = sizes if run == 0 else [size for size in sizes if size <= args.repeat_max]
            if not run_sizes:
                break
            report = child_report(store, run_sizes, args, env)
            if report is None:  # one store failing (a database gone away) keeps the others' figures
                break
            runs.append(report)
        results["stores"][store] = (
            merge_runs(runs) if runs else {"error": "benchmark process failed; see stderr"}
        )
    if not args.skip_index_recall:
        results["index_recall"] = child_report("index", sizes, args, env) or {"error": "see stderr"}
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))


def child_report(kind: str, sizes: list[int], args: argparse.Namespace, env: dict[str, str]) -> Any:
    child = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--sizes",
        ",".join(str(size) for size in sizes),
        "--single-calls",
        str(args.single_calls),
        "--batch",
        str(args.batch),
        "--queries",
        str(args.queries),
        "--rebuild-max",
        str(args.rebuild_max),
    ]
    done = subprocess.run(child, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        print(f"benchmark process {kind} exited with {done.returncode}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
