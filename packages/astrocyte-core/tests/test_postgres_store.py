"""PostgresStore behaviour beyond the shared contract: dimensions, concurrency, selective filters,
migrations, and what happens when the database goes away.

Needs ``ASTROCYTE_TEST_POSTGRES_DSN`` (a server with pgvector): skipped locally without it, a
failure under ``CI``. The module works in a schema unique to the run and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

asyncpg = pytest.importorskip("asyncpg")

from astrocyte.errors import ConfigError, ProviderUnavailableError, ValidationError  # noqa: E402
from astrocyte.stores import _postgres_schema as schema_mod  # noqa: E402
from astrocyte.stores.postgres import PostgresStore, redact_dsn  # noqa: E402
from astrocyte.testing._helpers import missing_service  # noqa: E402
from astrocyte.types import Chunk, ForgetSelector, MemoryRecord, SearchFilters  # noqa: E402

DIMS = 16
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def dsn() -> str:
    value = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
    if not value:
        missing_service("ASTROCYTE_TEST_POSTGRES_DSN is not set; no PostgreSQL to test against")
    return value


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _fresh_schema(dsn: str) -> AsyncIterator[str]:
    schema = f"astrocyte_test_pg_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        await _drop_schema(dsn, schema)


@pytest.fixture(scope="module")
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    async with _fresh_schema(dsn) as schema:
        opened = PostgresStore({"dsn": dsn, "schema": schema, "max_pool_size": 8})
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


def _bank(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _record(bank: str, vector: np.ndarray, *, text: str = "note", key: str | None = None, tags=(), at=None):
    return MemoryRecord(
        memory_id=uuid.uuid4().hex,
        bank_id=bank,
        text=text,
        chunks=(Chunk(0, text, _unit(vector)),),
        tags=tuple(tags),
        occurred_at=at,
        idempotency_key=key,
    )


# -- dimensions ----------------------------------------------------------------------------------


async def test_dimension_mismatch_writes_nothing(store: PostgresStore) -> None:
    bank = _bank("dims")
    rng = np.random.default_rng(1)
    await store.insert([_record(bank, rng.normal(size=DIMS))])
    other_bank = _bank("dims-new")
    batch = [_record(other_bank, rng.normal(size=DIMS)), _record(other_bank, rng.normal(size=DIMS // 2))]
    with pytest.raises(ValidationError) as caught:
        await store.insert(batch)
    assert caught.value.code == "embedding_dimension_mismatch"
    with pytest.raises(ValidationError) as caught:
        await store.insert([_record(bank, rng.normal(size=DIMS * 2))])
    assert caught.value.code == "embedding_dimension_mismatch"
    assert await store.count([bank, other_bank], SearchFilters()) == 1
    assert not await store.bank_exists(other_bank)


async def test_first_batch_with_mixed_sizes_fixes_no_dimension(dsn: str) -> None:
    async with _fresh_schema(dsn) as schema:
        fresh = PostgresStore({"dsn": dsn, "schema": schema})
        await fresh.open()
        try:
            bank = _bank("mixed")
            with pytest.raises(ValidationError):
                await fresh.insert([_record(bank, np.ones(4)), _record(bank, np.ones(8))])
            await fresh.insert([_record(bank, np.ones(8))])  # the first consistent batch decides
            with pytest.raises(ValidationError):
                await fresh.insert([_record(bank, np.ones(4))])
        finally:
            await fresh.close()


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_writers_with_one_key_store_one_memory(store: PostgresStore, dsn: str) -> None:
    bank = _bank("race")
    others = [PostgresStore({"dsn": dsn, "schema": store._schema}) for _ in range(2)]
    for other in others:
        await other.open()
    try:
        writers = [store, *others]
        rng = np.random.default_rng(2)
        batches = [
            [
                _record(bank, rng.normal(size=DIMS), key="same-key"),
                _record(bank, rng.normal(size=DIMS), key="same-key"),
            ]
            for _ in range(12)
        ]
        results = await asyncio.gather(*(writers[i % 3].insert(b) for i, b in enumerate(batches)))
    finally:
        for other in others:
            await other.close()
    outcomes = [outcome for batch in results for outcome in batch]
    assert len({o.memory_id for o in outcomes}) == 1
    assert sum(not o.deduplicated for o in outcomes) == 1
    assert await store.count([bank], SearchFilters()) == 1
    assert (await store.bank_stats(bank)).chunk_count == 1


async def test_a_first_batch_does_not_wait_for_another_first_batch_to_commit(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one replica's first batch is still inside its transaction, another replica's first
    batch to the same fresh schema completes (the embedding size is settled apart from the rows)."""
    from astrocyte.stores import postgres as postgres_mod

    held, release = asyncio.Event(), asyncio.Event()
    write = postgres_mod._write_records

    async def paused_write(conn, records):  # type: ignore[no-untyped-def]
        if records[0].text == "held":
            held.set()
            await release.wait()
        return await write(conn, records)

    monkeypatch.setattr(postgres_mod, "_write_records", paused_write)
    async with _fresh_schema(dsn) as schema:
        first, second = (PostgresStore({"dsn": dsn, "schema": schema}) for _ in range(2))
        await first.open()
        await second.open()
        try:
            bank = _bank("fresh")
            rng = np.random.default_rng(5)
            slow = asyncio.create_task(first.insert([_record(bank, rng.normal(size=DIMS), text="held")]))
            await asyncio.wait_for(held.wait(), 20)
            # Before the fix this waited on the schema's advisory lock until `slow` committed.
            done = await asyncio.wait_for(second.insert([_record(bank, rng.normal(size=DIMS))]), 20)
            release.set()
            assert len(await slow) == 1 and len(done) == 1
            assert await second.count([bank], SearchFilters()) == 2
        finally:
            release.set()
            await first.close()
            await second.close()


async def test_a_duplicate_does_not_wait_for_the_other_batchs_index_work(
    store: PostgresStore, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch meeting a key that another, uncommitted batch is writing finishes while the other
    is still writing its chunks (HNSW and full-text entries); the other then finds the key taken,
    drops its chunks and answers a duplicate: one memory, one chunk."""
    from astrocyte.stores import postgres as postgres_mod

    held, release = asyncio.Event(), asyncio.Event()
    insert_chunks = postgres_mod._insert_chunks

    async def paused_chunks(conn, records):  # type: ignore[no-untyped-def]
        await insert_chunks(conn, records)
        if records and records[0].text == "held":
            held.set()
            await release.wait()

    monkeypatch.setattr(postgres_mod, "_insert_chunks", paused_chunks)
    other = PostgresStore({"dsn": dsn, "schema": store._schema})
    await other.open()
    try:
        bank = _bank("overlap")
        rng = np.random.default_rng(8)
        await store.create_bank(bank)
        slow = asyncio.create_task(
            store.insert([_record(bank, rng.normal(size=DIMS), text="held", key="shared")])
        )
        await asyncio.wait_for(held.wait(), 20)
        # Before the fix this waited on the key's unique index until `slow` committed.
        [fast] = await asyncio.wait_for(
            other.insert([_record(bank, rng.normal(size=DIMS), key="shared")]), 20
        )
        release.set()
        [late] = await slow
    finally:
        release.set()
        await other.close()
    assert not fast.deduplicated and late.deduplicated and late.memory_id == fast.memory_id
    stats = await store.bank_stats(bank)
    assert (stats.memory_count, stats.chunk_count) == (1, 1)
    hits = await store.vector_search([bank], rng.normal(size=DIMS), 5, SearchFilters())
    assert [hit.memory_id for hit in hits] == [fast.memory_id]


async def test_concurrent_first_batches_to_a_fresh_schema_all_store(dsn: str) -> None:
    """Eight replicas' first batches at once, 4 each, to a schema that has no embedding size yet:
    none fails, every record is stored once. ``benchmarks/postgres_first_writes.py`` times it."""
    async with _fresh_schema(dsn) as schema:
        replicas = [PostgresStore({"dsn": dsn, "schema": schema, "min_pool_size": 0}) for _ in range(8)]
        await asyncio.gather(*(r.open() for r in replicas))
        try:
            bank = _bank("first")
            rng = np.random.default_rng(6)
            batches = [
                [_record(bank, rng.normal(size=DIMS), key=f"k-{b}-{i}") for i in range(100)]
                for b in range(32)
            ]
            results = await asyncio.gather(
                *(replicas[b % 8].insert(batch) for b, batch in enumerate(batches))
            )
            outcomes = [outcome for batch in results for outcome in batch]
            assert len(outcomes) == 3200 and not any(o.deduplicated for o in outcomes)
            assert await replicas[0].count([bank], SearchFilters()) == 3200
        finally:
            await asyncio.gather(*(r.close() for r in replicas))


# -- selective filters ---------------------------------------------------------------------------


async def _fill_with_decoys(store: PostgresStore, bank: str, query: np.ndarray, decoys: int) -> None:
    """Many memories close to ``query`` that carry no ``rare`` tag and an early date."""
    rng = np.random.default_rng(3)
    records = [
        _record(bank, query + rng.normal(scale=0.3, size=DIMS), text=f"decoy {i}", tags=("common",), at=T0)
        for i in range(decoys)
    ]
    for start in range(0, decoys, 500):
        await store.insert(records[start : start + 500])


async def test_selective_filters_still_return_k_exact_results(store: PostgresStore) -> None:
    bank = _bank("selective")
    rng = np.random.default_rng(4)
    query = _unit(rng.normal(size=DIMS))
    await _fill_with_decoys(store, bank, query, 2000)
    late = T0 + timedelta(days=30)
    rare = [
        _record(bank, rng.normal(size=DIMS), text=f"rare {i}", tags=("rare", "x"), at=late) for i in range(7)
    ]
    await store.insert(rare)
    expected = sorted(rare, key=lambda r: -float(r.chunks[0].embedding @ query))[:5]

    by_tag = await store.vector_search([bank], query, 5, SearchFilters(tags=("rare",)))
    assert [h.memory_id for h in by_tag] == [r.memory_id for r in expected]
    assert by_tag[0].score == pytest.approx(float(expected[0].chunks[0].embedding @ query), abs=1e-5)

    by_time = await store.vector_search(
        [bank], query, 5, SearchFilters(start=late, end=late + timedelta(days=1))
    )
    assert [h.memory_id for h in by_time] == [r.memory_id for r in expected]
    assert await store.vector_search([bank], query, 5, SearchFilters(start=late + timedelta(days=1))) == []
    assert await store.count([bank], SearchFilters(tags=("rare", "x"))) == 7


async def test_unfiltered_search_uses_the_hnsw_index(store: PostgresStore) -> None:
    bank = _bank("explain")
    rng = np.random.default_rng(5)
    query = _unit(rng.normal(size=DIMS))
    await _fill_with_decoys(store, bank, query, 1000)
    async with store._connection() as conn, conn.transaction():
        await conn.execute("ANALYZE chunks")
        # At a thousand rows an exact sort is about as cheap as the index with the default search
        # breadth, so the planner may pick either; a narrower breadth tips it to the index, which
        # is what every larger bank gets (the 100k plan is shown by benchmarks/postgres_store_probe.py).
        await conn.execute("SET LOCAL hnsw.ef_search = 10")
        rows = await conn.fetch(
            "EXPLAIN SELECT memory_id FROM chunks WHERE bank_id = ANY($2::text[]) ORDER BY embedding <=> $1 LIMIT 10",
            query,
            [bank],
        )
    assert "chunks_embedding_hnsw" in "\n".join(row[0] for row in rows)
    hits = await store.vector_search([bank], query, 10, SearchFilters())
    assert len(hits) == 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_an_identical_vector_is_the_first_hit_even_when_the_index_walk_misses_it(dsn: str) -> None:
    """With the narrowest HNSW beam the walk misses many stored vectors (70 of 100 at 3,000
    memories of 384 dimensions, measured before the identity index); that index still puts each
    one first, scored 1. (At 16 dimensions the walk finds them all, so this test uses 384.)"""
    async with _fresh_schema(dsn) as schema:
        narrow = PostgresStore({"dsn": dsn, "schema": schema, "hnsw_ef_search": 1})
        await narrow.open()
        try:
            bank = _bank("identical")
            rng = np.random.default_rng(10)
            records = [_record(bank, rng.normal(size=384), text=f"point {i}") for i in range(3000)]
            for start in range(0, len(records), 1000):
                await narrow.insert(records[start : start + 1000])
            for record in records[::30]:
                hits = await narrow.vector_search([bank], record.chunks[0].embedding, 5, SearchFilters())
                assert hits[0].memory_id == record.memory_id and hits[0].score == pytest.approx(1.0)
                assert len(hits) == 5 and len({h.memory_id for h in hits}) == 5
            tagged = await narrow.vector_search(
                [bank], records[0].chunks[0].embedding, 5, SearchFilters(tags=("absent",))
            )
            assert tagged == []  # the identity lookup obeys the filters too
        finally:
            await narrow.close()


# -- keyword search ------------------------------------------------------------------------------


async def test_keyword_search_survives_any_input(store: PostgresStore) -> None:
    bank = _bank("keywords")
    await store.insert(
        [
            _record(bank, np.ones(DIMS), text="Deploying the payment service on Friday"),
            _record(bank, np.ones(DIMS), text="Zürich office coffee machine"),
        ]
    )
    nasty = [
        "'",
        '"unterminated',
        "a & | ! ( ) :* <-> <2>",
        "or OR or",
        "-",
        "the and of",
        "",
        "\x00",
        "🙂 emoji",
    ]
    for query in nasty:
        assert await store.keyword_search([bank], query, 5, SearchFilters()) == []
    hits = await store.keyword_search([bank], "deployed payments!", 5, SearchFilters())
    assert [h.text for h in hits] == ["Deploying the payment service on Friday"]
    assert [h.text for h in await store.keyword_search([bank], "zürich", 5, SearchFilters())] == [
        "Zürich office coffee machine"
    ]


# -- forget --------------------------------------------------------------------------------------


async def test_forget_combines_selectors(store: PostgresStore) -> None:
    bank = _bank("forget")
    old = _record(bank, np.ones(DIMS), tags=("a", "b"))
    await store.insert([old, _record(bank, np.ones(DIMS), tags=("a",))])
    assert await store.forget(bank, ForgetSelector(tags=("a", "b"), before=datetime.now(UTC))) == 1
    assert await store.forget(bank, ForgetSelector(memory_ids=(old.memory_id,))) == 0
    assert await store.forget(bank, ForgetSelector(all_=True)) == 1
    with pytest.raises(ValidationError):
        await store.forget(bank, ForgetSelector(all_=True, tags=("a",)))


# -- migrations ----------------------------------------------------------------------------------


async def test_migrations_run_concurrently_and_twice(dsn: str) -> None:
    async with _fresh_schema(dsn) as schema:
        stores = [PostgresStore({"dsn": dsn, "schema": schema, "min_pool_size": 0}) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        for s in stores:
            await s.close()
        again = PostgresStore({"dsn": dsn, "schema": schema})
        await again.open()
        try:
            async with again._connection() as conn:
                version = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
            assert int(version) == len(schema_mod.MIGRATIONS)
            assert await again.create_bank("after-migrations")
        finally:
            await again.close()


async def test_an_existing_schema_is_upgraded_to_deferred_chunk_references(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema made by the first migration only (as released) gets migration 2 on open: the
    chunks' foreign key becomes deferrable, and the memories already there stay."""
    async with _fresh_schema(dsn) as schema:
        bank = _bank("upgrade")
        monkeypatch.setattr(schema_mod, "MIGRATIONS", schema_mod.MIGRATIONS[:1])
        conn = await asyncpg.connect(dsn)
        try:
            assert await schema_mod.migrate(conn, schema) == 1
            await conn.execute(f'INSERT INTO "{schema}".banks (bank_id) VALUES ($1)', bank)
            await conn.execute(
                f'INSERT INTO "{schema}".memories (bank_id, memory_id, text, retained_at, idempotency_key) '
                "VALUES ($1, 'm-old', 'old', now(), 'before')",
                bank,
            )
        finally:
            await conn.close()
        monkeypatch.undo()
        new = PostgresStore({"dsn": dsn, "schema": schema})
        await new.open()
        try:
            async with new._connection() as conn:
                version = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
                deferred = await conn.fetchval(
                    "SELECT condeferrable AND condeferred FROM pg_constraint "
                    "WHERE conrelid = 'chunks'::regclass AND contype = 'f'"
                )
            assert int(version) == len(schema_mod.MIGRATIONS) and deferred
            rng = np.random.default_rng(9)
            [again, fresh] = await new.insert(
                [_record(bank, rng.normal(size=DIMS), key="before"), _record(bank, rng.normal(size=DIMS))]
            )
            assert again.deduplicated and again.memory_id == "m-old" and not fresh.deduplicated
            stats = await new.bank_stats(bank)
            assert (stats.memory_count, stats.chunk_count) == (2, 1)
        finally:
            await new.close()


# -- database down -------------------------------------------------------------------------------


class _Proxy:
    """A TCP forwarder in front of the test server, so a test can cut the database off."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


async def test_health_and_calls_report_a_down_database(store: PostgresStore, dsn: str) -> None:
    parts = urlsplit(dsn)
    if parts.scheme not in {"postgres", "postgresql"} or not parts.hostname or not parts.port:
        pytest.skip("needs a host:port URL DSN to put a proxy in front of")
    proxy = _Proxy(parts.hostname, parts.port)
    await proxy.start()
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    proxied = PostgresStore({"dsn": urlunsplit(parts._replace(netloc=netloc)), "schema": store._schema})
    await proxied.open()
    try:
        assert (await proxied.health()).healthy
        await proxy.stop()
        report = await proxied.health()
        assert not report.healthy and report.detail
        with pytest.raises(ProviderUnavailableError):
            await proxied.list_banks()
        await proxy.start()  # same port: the pool reconnects on its own
        assert (await proxied.health()).healthy
    finally:
        await proxied.close()
        await proxy.stop()


async def test_open_against_nothing_is_provider_unavailable() -> None:
    closed = PostgresStore({"dsn": "postgresql://u:hunter2@127.0.0.1:9/x", "command_timeout": 2})
    with pytest.raises(ProviderUnavailableError) as caught:
        await closed.open()
    assert "hunter2" not in str(caught.value)
    assert not (await closed.health()).healthy


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"dsn": "postgresql://x", "pool": 3}, "pool"),
        ({"dsn": "postgresql://x", "max_pool_size": "many"}, "max_pool_size"),
        ({"dsn": "postgresql://x", "min_pool_size": 5, "max_pool_size": 2}, "min_pool_size"),
        ({"dsn": "postgresql://x", "schema": "Bad-Name"}, "schema"),
        ({}, "dsn"),
    ],
)
def test_config_errors_name_the_key(config: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStore.validate_config(config)
    assert named in str(caught.value)


def test_config_errors_and_logs_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStore.validate_config({"dsn": "postgresql://u:s3cret@h/db", "hnsw_m": "s3cret"})
    assert "s3cret" not in str(caught.value)
    assert redact_dsn("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "cret" not in redact_dsn("postgresql://u:s3@cret@h/db")
    assert "s3cret" not in redact_dsn("host=h user=u password=s3cret dbname=db")
