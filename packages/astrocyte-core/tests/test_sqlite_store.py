"""Behaviour specific to the SQLite store: persistence, the vector index, FTS5 query safety.

The generic behaviour every store shares is in ``tests/contract/test_store_contract_sqlite.py``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astrocyte.errors import ConfigError, ValidationError
from astrocyte.stores import _vector_index
from astrocyte.stores.sqlite import SQLiteStore, fts_query, fts_words
from astrocyte.testing._helpers import at, make_record, normalised, unit_vector
from astrocyte.types import ForgetSelector, SearchFilters

NO_FILTERS = SearchFilters()
OpenStore = Callable[..., Awaitable[SQLiteStore]]


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open stores on one file in ``tmp_path`` (config overrides as keywords); closes them all."""
    opened: list[SQLiteStore] = []

    async def factory(**overrides: Any) -> SQLiteStore:
        store = SQLiteStore({"path": str(tmp_path / "sub" / "dir" / "astrocyte.db"), **overrides})
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


def _ids(hits: list[Any]) -> set[str]:
    return {hit.memory_id for hit in hits}


def _exact_top(records: list[Any], query: np.ndarray, k: int) -> list[str]:
    scored = sorted(records, key=lambda r: -float(r.chunks[0].embedding @ query))
    return [r.memory_id for r in scored[:k]]


# -- configuration -------------------------------------------------------------------------------


def test_validate_config_names_unknown_and_ill_typed_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteStore.validate_config({"path": "x.db", "pathh": "y", "busy_timeout_ms": "soon"})
    assert "pathh" in caught.value.message and "busy_timeout_ms" in caught.value.message
    with pytest.raises(ConfigError):
        SQLiteStore.validate_config({})
    SQLiteStore.validate_config({"path": "x.db", "index_dtype": "f32", "exact_search_max": 0})


async def test_open_creates_parent_directories_and_uses_wal(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()
    assert (tmp_path / "sub" / "dir" / "astrocyte.db").exists()
    mode = await store._read(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    health = await store.health()
    assert health.healthy and health.latency_ms is not None


# -- persistence and the index ---------------------------------------------------------------------


async def test_reopen_rebuilds_the_index_from_the_file(open_store: OpenStore, tmp_path: Path) -> None:
    first = await open_store(index_snapshot=False)
    records = [make_record("b", f"persisted {i}", tags=["t"], retained_at=at(i)) for i in range(50)]
    await first.insert(records)
    await first.close()
    assert not (tmp_path / "sub" / "dir" / "astrocyte.db.vectors").exists()

    second = await open_store(
        exact_search_max=0, index_exact_max=0
    )  # force the HNSW path on the rebuilt index
    assert second._index.size(["b"]) == 50
    for target in (records[0], records[31]):
        hits = await second.vector_search(["b"], target.chunks[0].embedding, 3, NO_FILTERS)
        assert hits[0].memory_id == target.memory_id
        assert hits[0].tags == ("t",) and hits[0].retained_at == target.retained_at
    stats = await second.bank_stats("b")
    assert (stats.memory_count, stats.oldest_retained_at, stats.newest_retained_at) == (50, at(0), at(49))


async def test_a_snapshot_older_than_the_file_is_brought_up_to_date_without_a_rebuild(
    open_store: OpenStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await open_store()
    old = [make_record("b", f"written before the snapshot {i}") for i in range(5)]
    await first.insert([*old, make_record("gone", "a bank deleted later")])
    await first.close()  # snapshot at this generation
    assert (tmp_path / "sub" / "dir" / "astrocyte.db.vectors" / "manifest.json").exists()

    # A later writer that never saves a snapshot (as after a crash) leaves it stale.
    second = await open_store(index_snapshot=False)
    new = make_record("b", "written after the snapshot")
    await second.insert([new])
    await second.forget("b", ForgetSelector(memory_ids=(old[0].memory_id,)))
    await second.delete_bank("gone")
    await second.close()

    def no_rebuild(self: SQLiteStore) -> None:
        raise AssertionError("a usable snapshot must not cost a rebuild")

    monkeypatch.setattr(SQLiteStore, "_rebuild_index", no_rebuild)
    third = await open_store()
    assert third._index.size(["b"]) == 5 and third._index.size(["gone"]) == 0
    hits = await third.vector_search(["b"], new.chunks[0].embedding, 1, NO_FILTERS)
    assert _ids(hits) == {new.memory_id}
    everything = await third.vector_search(["b"], new.chunks[0].embedding, 10, NO_FILTERS)
    assert old[0].memory_id not in _ids(everything) and len(everything) == 5


async def test_a_snapshot_of_another_file_is_not_used(open_store: OpenStore, tmp_path: Path) -> None:
    first = await open_store()
    await first.insert([make_record("b", "in the first file")])
    await first.close()
    path = tmp_path / "sub" / "dir" / "astrocyte.db"
    for leftover in path.parent.glob(path.name + "*"):
        if leftover.is_file():
            os.remove(leftover)
    replacement = await open_store()  # a new file where the old one was; the old snapshot stays
    assert replacement._index.size(["b"]) == 0
    assert await replacement.keyword_search(["b"], "first file", 5, NO_FILTERS) == []


async def test_dimension_mismatch_writes_nothing_and_the_dimension_persists(open_store: OpenStore) -> None:
    store = await open_store()
    await store.insert([make_record("b", "sets sixteen dimensions")])
    bad = make_record("fresh", "too long", dim=17, idempotency_key="k")
    with pytest.raises(ValidationError) as caught:
        await store.insert([make_record("fresh", "fine", idempotency_key="k2"), bad])
    assert caught.value.code == "embedding_dimension_mismatch"
    await store.close()

    reopened = await open_store()
    assert await reopened.list_banks() == ["b"]
    with pytest.raises(ValidationError):
        await reopened.insert([bad])
    with pytest.raises(ValidationError):
        await reopened.vector_search(["b"], unit_vector("q", dim=17), 3, NO_FILTERS)


LEGACY_FTS_TRIGGER = """CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, bank_key) VALUES (new.id, new.text, new.bank_key);
END"""


@pytest.mark.parametrize("legacy_trigger", [False, True], ids=["current", "file-with-legacy-trigger"])
async def test_keyword_rows_match_the_chunks_exactly(open_store: OpenStore, legacy_trigger: bool) -> None:
    # Older versions kept FTS rows in step by a per-row trigger (and may still share the file):
    # either way every chunk must be in the FTS index exactly once.
    store = await open_store()
    if legacy_trigger:
        await store._write(lambda: store._threads.writer.execute(LEGACY_FTS_TRIGGER))
    records = [make_record("b", f"walrus number {i}", chunks=[f"walrus {i}", f"tusk {i}"]) for i in range(30)]
    await store.insert(records)
    await store.forget("b", ForgetSelector(memory_ids=tuple(r.memory_id for r in records[:10])))

    def check(conn: sqlite3.Connection) -> tuple[int, int]:
        conn.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
        matches = conn.execute("SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'tusk'").fetchone()[0]
        return matches, conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    assert await store._write(lambda: check(store._threads.writer)) == (20, 40)
    assert len(await store.keyword_search(["b"], "walrus", 50, NO_FILTERS)) == 20


async def test_a_file_without_text_hashes_is_upgraded_and_finds_exact_text(
    open_store: OpenStore, tmp_path: Path
) -> None:
    # Files made before chunks.text_hash (and rows an older version sharing the file writes) get
    # it at the next open; the exact text is then the first keyword hit although BM25 prefers
    # the chunks repeating its words.
    store = await open_store()
    await store.insert([make_record("b", f"red lamp red lamp by the red door {i}") for i in range(40)])
    await store.insert([make_record("b", "The red lamp.")])
    await store.close()
    path = tmp_path / "sub" / "dir" / "astrocyte.db"
    with sqlite3.connect(path) as conn:
        for column in ("text_hash", "vector_hash"):
            conn.execute(f"DROP INDEX chunks_by_{column}")
            conn.execute(f"ALTER TABLE chunks DROP COLUMN {column}")
    reopened = await open_store()
    assert (await reopened.keyword_search(["b"], "the RED lamp", 5, NO_FILTERS))[0].text == "The red lamp."
    await reopened.close()
    with sqlite3.connect(path) as conn:  # an older version's row: no hash
        conn.execute("UPDATE chunks SET text_hash = NULL WHERE text = 'The red lamp.'")
    third = await open_store()
    assert (await third.keyword_search(["b"], "the red lamp", 5, NO_FILTERS))[0].text == "The red lamp."
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM chunks WHERE text_hash IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM chunks WHERE vector_hash IS NULL").fetchone() == (0,)
    [lamp] = await third.keyword_search(["b"], "the red lamp", 1, NO_FILTERS)
    _, embedding = await _chunk_of(third, lamp.memory_id)
    [first] = await third.vector_search(["b"], embedding, 1, NO_FILTERS)
    assert first.text == "The red lamp."


async def test_forget_and_delete_bank_remove_vectors_from_the_index(open_store: OpenStore) -> None:
    store = await open_store(exact_search_max=0, index_exact_max=0)
    records = [make_record("b", f"doomed {i}", tags=["even" if i % 2 else "odd"]) for i in range(40)]
    await store.insert(records)
    await store.insert([make_record("other", "bystander")])
    assert await store.forget("b", ForgetSelector(tags=("even",))) == 20
    assert store._index.size(["b"]) == 20
    hits = await store.vector_search(["b"], records[1].chunks[0].embedding, 40, NO_FILTERS)
    assert len(hits) == 20 and records[1].memory_id not in _ids(hits)
    assert await store.keyword_search(["b"], "doomed", 40, NO_FILTERS) != []
    assert await store.delete_bank("b") == 20
    assert store._index.size(["b"]) == 0 and store._index.size(["other"]) == 1
    assert await store.keyword_search(["b"], "doomed", 40, NO_FILTERS) == []


async def test_heavy_deletion_rebuilds_the_bank_graph(open_store: OpenStore) -> None:
    store = await open_store(exact_search_max=8, index_exact_max=8)
    records = [make_record("b", f"churn {i}") for i in range(60)]
    await store.insert(records)
    await store.forget("b", ForgetSelector(memory_ids=tuple(r.memory_id for r in records[:50])))
    assert not store._index.needs_rebuild("b")
    survivor = records[55]
    hits = await store.vector_search(["b"], survivor.chunks[0].embedding, 1, NO_FILTERS)
    assert hits[0].memory_id == survivor.memory_id


# -- concurrency -----------------------------------------------------------------------------------


async def test_two_store_instances_on_one_file_never_duplicate_a_key(open_store: OpenStore) -> None:
    # Two writer connections (as two processes would have) race on the same keys.
    first, second = await open_store(), await open_store()

    async def writer(store: SQLiteStore, label: str) -> list[tuple[str, bool]]:
        results = []
        for i in range(30):
            (outcome,) = await store.insert([make_record("race", f"{label} {i}", idempotency_key=f"key-{i}")])
            results.append((outcome.memory_id, outcome.deduplicated))
        return results

    a, b = await asyncio.gather(writer(first, "first"), writer(second, "second"))
    assert await first.count(["race"], NO_FILTERS) == 30
    for (id_a, dup_a), (id_b, dup_b) in zip(a, b, strict=True):
        assert id_a == id_b and dup_a != dup_b


async def test_reads_run_while_a_large_batch_is_written(open_store: OpenStore) -> None:
    store = await open_store()
    await store.insert([make_record("b", "already there")])
    batch = [make_record("b", f"bulk {i}") for i in range(2000)]
    write = asyncio.create_task(store.insert(batch))
    counts = []
    while not write.done():
        counts.append(await store.count(["b"], NO_FILTERS))
        await asyncio.sleep(0)
    await write
    # Readers saw the old state or the new one, never a half-written batch.
    assert set(counts) <= {1, 2001}
    assert await store.count(["b"], NO_FILTERS) == 2001


# -- keyword search ----------------------------------------------------------------------------------

NASTY = (
    "",
    " ",
    '"',
    '""',
    "'",
    "\\",
    '"zebra',
    'zebra"',
    "zebra*",
    "*",
    "^zebra",
    "-zebra",
    "+",
    "a + b",
    "NEAR(zebra crossing, 2)",
    "zebra NOT crossing",
    "AND",
    "OR OR OR",
    "(",
    ")",
    "((zebra)",
    "{text}: zebra",
    "text:zebra",
    "chunks_fts:zebra",
    "rank:1",
    "zebra; DROP TABLE chunks; --",
    "%",
    "_",
    "?",
    "?1",
    ":name",
    "\x00zebra",
    "zebra\x00crossing",
    "zébra",
    "ZEBRA",
    "斑马 crossing",
    "🦓 zebra 🦓",
    "zebra\ncrossing\t",
    "snake_case_word",
    "o'neill's zebra",
    "x" * 5000,
    " ".join(f"w{i}" for i in range(500)),
    "\u200b",
)


@pytest.mark.parametrize("query", NASTY)
def test_fts_words_are_always_safely_quoted(query: str) -> None:
    words = fts_words(query)
    assert len(words) <= 32
    for word in words:
        assert word.startswith('"') and word.endswith('"') and '"' not in word[1:-1]
    assert (fts_query(query) is None) == (not words)


async def test_keyword_search_answers_any_input_without_sql_errors(open_store: OpenStore) -> None:
    store = await open_store()
    await store.insert(
        [
            make_record("b", "zebra crossing near the station"),
            make_record("b", "Zébra café in Zürich"),
            make_record("b", "斑马 means zebra"),
        ]
    )
    for query in NASTY:
        hits = await store.keyword_search(["b"], query, 5, NO_FILTERS)
        assert isinstance(hits, list)
    # Operators are plain words, diacritics and case fold, and scores are higher-is-better.
    near = await store.keyword_search(["b"], "NEAR(zebra crossing)", 5, NO_FILTERS)
    assert near[0].text == "zebra crossing near the station"
    assert [h.score for h in near] == sorted((h.score for h in near), reverse=True)
    assert {h.text for h in await store.keyword_search(["b"], "ZURICH cafe", 5, NO_FILTERS)} == {
        "Zébra café in Zürich"
    }
    assert len(await store.keyword_search(["b"], "斑马", 5, NO_FILTERS)) == 1


async def test_broad_keyword_queries_still_rank_chunks_with_every_word_first(open_store: OpenStore) -> None:
    # More matches than the rank window: the best (both words) must still come first, even when old.
    store = await open_store(keyword_rank_window=20)
    best = make_record("b", "heron kingfisher pond", retained_at=at(0))
    await store.insert([best])
    await store.insert([make_record("b", f"heron number {i}", retained_at=at(i + 1)) for i in range(100)])
    await store.insert(
        [make_record("b", f"kingfisher number {i}", retained_at=at(i + 1)) for i in range(100)]
    )
    hits = await store.keyword_search(["b"], "heron kingfisher", 10, NO_FILTERS)
    assert hits[0].memory_id == best.memory_id and len(hits) == 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    tagged = await store.keyword_search(["b"], "heron", 200, SearchFilters(start=at(50)))
    assert len(tagged) == 51 and all(h.retained_at >= at(50) for h in tagged)


async def test_keyword_search_ranks_the_words_that_can_matter(open_store: OpenStore) -> None:
    # A chat-length query: words no chunk holds are not ranked (they only cost time), the rarest
    # are; a word written after it was found absent is found.
    store = await open_store()
    await store.insert([make_record("b", f"weekly standup notes number {i}") for i in range(30)])
    await store.insert([make_record("b", "standup moved to the heron room")])
    query = "hi there, quick question about the heron standup notes, thanks a lot"
    hits = await store.keyword_search(["b"], query, 5, NO_FILTERS)
    assert hits[0].text == "standup moved to the heron room"
    assert len(hits) == 5  # a small store still ranks the words most chunks hold
    assert await store.keyword_search(["b"], "zorblax", 5, NO_FILTERS) == []
    await store.insert([make_record("b", "zorblax is the new cat")])
    assert [h.text for h in await store.keyword_search(["b"], "thanks zorblax", 5, NO_FILTERS)] == [
        "zorblax is the new cat"
    ]


def test_term_choice_drops_absent_and_common_words_and_keeps_the_rarest(tmp_path: Path) -> None:
    from astrocyte.stores._sqlite_schema import SCHEMA, connect
    from astrocyte.stores._sqlite_search import _MAX_RANKED_WORDS, READER_SETUP, TermStats

    conn = connect(tmp_path / "terms.db", 1000, 1024)
    conn.executescript(SCHEMA)
    conn.execute(READER_SETUP)
    rare = [f"rare{i}" for i in range(_MAX_RANKED_WORDS + 2)]
    texts = ["everywhere " + " ".join(rare[: i + 1]) for i in range(len(rare))] + ["everywhere"] * 20
    for number, text in enumerate(texts, start=1):
        conn.execute(
            "INSERT INTO chunks (id, memory, bank_id, chunk_index, text, bank_key, embedding) "
            "VALUES (?, 0, 'b', 0, ?, 'kb', x'')",
            (number, text),
        )
    conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')")
    stats = TermStats(pervasive_from=0, common_share=2)
    quoted = [f'"{w}"' for w in ["absent", "everywhere", *rare, "café"]]
    chosen = stats.choose(conn, quoted, len(texts), generation=1)
    # "café" cannot be counted (unicode61 folds it): kept, as if rare; then the rarest counted ones.
    assert chosen == ['"café"', *[f'"{w}"' for w in reversed(rare)]][:_MAX_RANKED_WORDS]
    assert stats.choose(conn, ['"everywhere"', '"absent"'], len(texts), generation=1) == ['"everywhere"']
    assert stats.choose(conn, ['"absent"'], len(texts), generation=1) == []
    conn.close()


# -- filters on the ANN path ---------------------------------------------------------------------------


async def test_filters_after_ann_over_fetch_return_k_correct_hits(open_store: OpenStore) -> None:
    # Filters matching more than 16 chunks go through HNSW (not exact: over 16 vectors) with over-fetch.
    store = await open_store(exact_search_max=16, index_exact_max=16)
    query = unit_vector("the query")
    near = [
        make_record("b", f"near {i}", tags=["common"], embedding=normalised(query + 0.3 * unit_vector(i)))
        for i in range(300)
    ]
    # The tagged records all point away from the query: the nearest neighbours are all untagged,
    # so only widening the search finds them.
    far = [
        make_record(
            "b",
            f"far {i}",
            tags=["rare", "x"],
            embedding=normalised(-query + 0.5 * unit_vector(f"f{i}")),
            occurred_at=at(i),
        )
        for i in range(40)
    ]
    await store.insert(near + far)
    hits = await store.vector_search(["b"], query, 5, SearchFilters(tags=("rare", "x")))
    assert len(hits) == 5 and _ids(hits) <= {r.memory_id for r in far}
    assert [h.memory_id for h in hits] == _exact_top(far, query, 5)

    window = SearchFilters(tags=("rare",), start=at(10), end=at(30))
    hits = await store.vector_search(["b"], query, 50, window)
    assert _ids(hits) == {r.memory_id for r in far[10:30]}  # start inclusive, end exclusive
    assert await store.count(["b"], window) == 20


async def test_a_bank_within_index_exact_max_is_searched_exactly(open_store: OpenStore) -> None:
    # The bank-size threshold and the filtered-scan threshold are separate knobs.
    store = await open_store(exact_search_max=0, index_exact_max=500)
    assert (store._index.settings.exact_below, store._limits.exact_max) == (500, 0)
    query = unit_vector("the query")
    records = [
        make_record("b", f"r {i}", embedding=normalised(query + 0.8 * unit_vector(f"n{i}")))
        for i in range(400)
    ]
    await store.insert(records)
    hits = await store.vector_search(["b"], query, 20, NO_FILTERS)
    assert [h.memory_id for h in hits] == _exact_top(records, query, 20)


@pytest.mark.parametrize("where", ["exact", "graph", "queued"])
async def test_a_stored_vector_is_the_first_hit_among_near_duplicates_that_quantise_alike(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # The index holds vectors as i8: near-duplicates of the query differing below that resolution
    # have the same quantised distance as the query's own vector, however many there are. Scored
    # in float32 they are each a little less similar, so the identical one must still come first,
    # whether the bank is searched exactly, through its graph, or the vector waits in the queue
    # (scored exactly there: for this query the distance rounds to 0.0, as the graph's ties are).
    store = await open_store(index_exact_max=0 if where == "graph" else 8192)
    query = unit_vector("the template")
    near = [
        make_record("b", f"near {i}", embedding=normalised(query + 1e-3 * unit_vector(f"n{i}")))
        for i in range(300)
    ]
    assert max(float(r.chunks[0].embedding @ query) for r in near) < 1 - 1e-7
    same = make_record("b", "same", embedding=query)
    indexed = threading.Event()
    if where == "queued":
        await store.insert(near)
        store._index.flush()
        original = _vector_index._BankIndex.index_some

        def held(bank: _vector_index._BankIndex, limit: int) -> int:
            indexed.wait(10)
            return original(bank, limit)

        monkeypatch.setattr(_vector_index._BankIndex, "index_some", held)
        await store.insert([same])
    else:
        indexed.set()
        await store.insert([same, *near])  # first: where the search cut at count left it out
        store._index.flush()
    try:
        hits = await store.vector_search(["b"], query, 10, NO_FILTERS)
        assert [h.memory_id for h in hits[:1]] == [same.memory_id]
    finally:
        indexed.set()


async def _chunk_of(store: SQLiteStore, memory_id: str) -> tuple[int, np.ndarray]:
    """The id and stored vector of a one-chunk memory's chunk."""

    def read() -> tuple[int, bytes]:
        sql = (
            "SELECT c.id, c.embedding FROM chunks c JOIN memories m ON m.id = c.memory WHERE m.memory_id = ?"
        )
        return store._threads.writer.execute(sql, (memory_id,)).fetchone()

    chunk_id, blob = await store._write(read)
    return chunk_id, np.frombuffer(blob, dtype=np.float32)


@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
async def test_a_stored_copy_of_the_query_vector_is_first_when_the_graph_walk_misses_it(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch, filtered: bool
) -> None:
    # HNSW is approximate: a walk can pass a stored vector by. The chunk whose vector is the
    # query's is found by its hash instead, and ranked first although 40 near-copies score within
    # 1e-8 of it (where float32 scores tie: rescoring is in float64).
    store = await open_store(index_exact_max=0, exact_search_max=0)
    query = unit_vector("the template")
    near = [
        make_record("b", f"near {i}", tags=["t"], embedding=normalised(query + 1e-4 * unit_vector(f"n{i}")))
        for i in range(40)
    ]
    same = make_record("b", "same", tags=["t"], embedding=query)
    await store.insert([*near, same])
    store._index.flush()
    same_chunk, _ = await _chunk_of(store, same.memory_id)
    search = _vector_index.VectorIndex.search

    def walk_that_misses(index: _vector_index.VectorIndex, banks: Any, vector: Any, count: int) -> list[int]:
        return [key for key in search(index, banks, vector, count + 1) if key != same_chunk][:count]

    monkeypatch.setattr(_vector_index.VectorIndex, "search", walk_that_misses)
    filters = SearchFilters(tags=("t",)) if filtered else NO_FILTERS
    hits = await store.vector_search(["b"], query, 5, filters)
    assert [h.memory_id for h in hits[:1]] == [same.memory_id]
    assert hits[0].score > hits[1].score


async def test_selective_filters_use_an_exact_scan(open_store: OpenStore) -> None:
    store = await open_store(exact_search_max=64)
    records = [make_record("b", f"item {i}", tags=["pick"] if i % 50 == 0 else []) for i in range(1000)]
    await store.insert(records)
    picked = [r for r in records if "pick" in r.tags]
    query = unit_vector("selective")
    hits = await store.vector_search(["b"], query, 10, SearchFilters(tags=("pick",)))
    assert [h.memory_id for h in hits] == _exact_top(picked, query, 10)
    expected = [float(r.chunks[0].embedding @ query) for r in picked]
    assert [round(h.score, 4) for h in hits] == [round(s, 4) for s in sorted(expected, reverse=True)[:10]]


async def test_multi_bank_search_merges_each_bank_index(open_store: OpenStore) -> None:
    store = await open_store(exact_search_max=0, index_exact_max=0)
    banks = {name: [make_record(name, f"{name} {i}") for i in range(30)] for name in ("a", "b", "c")}
    for records in banks.values():
        await store.insert(records)
    query = unit_vector("multi")
    hits = await store.vector_search(["a", "c", "a"], query, 8, NO_FILTERS)
    assert {h.bank_id for h in hits} <= {"a", "c"}
    assert [h.memory_id for h in hits] == _exact_top(banks["a"] + banks["c"], query, 8)
    assert await store.count(["a", "c"], NO_FILTERS) == 60


async def test_keyword_search_of_a_large_bank_is_not_crowded_out_by_other_banks(
    open_store: OpenStore,
) -> None:
    store = await open_store(keyword_rank_window=20)
    await store.insert([make_record("big", f"heron big {i}") for i in range(60)])
    await store.insert([make_record("small", f"heron small {i}") for i in range(50)])
    for bank, k, expected in (("big", 55, 55), ("small", 55, 50), ("big", 5, 5)):
        hits = await store.keyword_search([bank], "heron", k, NO_FILTERS)
        assert len(hits) == expected and {h.bank_id for h in hits} == {bank}
    both = await store.keyword_search(["big", "small"], "heron", 200, NO_FILTERS)
    assert len(both) == 110


async def test_a_second_writer_on_the_same_file_is_seen_by_the_index(open_store: OpenStore) -> None:
    # Two store instances stand for two processes (gateway workers) sharing one file.
    reader, writer = (
        await open_store(exact_search_max=0, index_exact_max=0),
        await open_store(exact_search_max=0, index_exact_max=0),
    )
    records = [make_record("shared", f"from the other process {i}") for i in range(30)]
    await writer.insert(records)  # reader's index has never seen a vector, nor the dimension
    target = records[7]
    hits = await reader.vector_search(["shared"], target.chunks[0].embedding, 3, NO_FILTERS)
    assert hits[0].memory_id == target.memory_id
    await reader.insert([make_record("shared", "the reader writes too")])
    await writer.insert([make_record("shared", "and the writer again")])
    assert len(await reader.vector_search(["shared"], unit_vector("q"), 100, NO_FILTERS)) == 32
    await reader.forget("shared", ForgetSelector(memory_ids=(target.memory_id,)))
    hits = await writer.vector_search(["shared"], target.chunks[0].embedding, 50, NO_FILTERS)
    assert len(hits) == 31 and target.memory_id not in _ids(hits)


async def test_a_write_waits_for_another_connections_write_lock_then_goes_through(
    open_store: OpenStore, tmp_path: Path
) -> None:
    # Another process's writer holds the file's write lock; this store's write polls for it
    # (not SQLite's busy handler, whose sleeps grow to 100 ms) and is stored once it is free.
    store = await open_store()
    other = sqlite3.connect(tmp_path / "sub" / "dir" / "astrocyte.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pending = asyncio.ensure_future(store.insert([make_record("b", "written after the lock")]))
    await asyncio.sleep(0.3)
    assert not pending.done(), "the write did not wait for the lock"
    other.execute("COMMIT")
    await asyncio.wait_for(pending, 5)
    assert [h.text for h in await store.keyword_search(["b"], "written", 5, NO_FILTERS)] == [
        "written after the lock"
    ]
    # The busy timeout still bounds the wait, and the connection keeps its setting afterwards.
    quick = await open_store(busy_timeout_ms=200)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await quick.insert([make_record("b", "never written")])
    other.execute("COMMIT")
    other.close()
    await quick.insert([make_record("b", "written later")])
    assert await quick._write(lambda: quick._threads.writer.execute("PRAGMA busy_timeout").fetchone()) == (
        200,
    )
