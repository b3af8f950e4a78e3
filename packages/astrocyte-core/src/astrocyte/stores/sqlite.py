"""``sqlite``: the embedded default store. One SQLite file (WAL) is the source of truth.

The file's layout is in ``_sqlite_schema``. Vector search goes through an in-memory usearch HNSW
index per bank (``_vector_index``) keyed by chunk rowid; candidates are re-read from SQLite, which
re-applies filters, drops rows deleted meanwhile and re-scores with the exact float32 cosine
(``_sqlite_search``). On ``open`` the index is rebuilt from the BLOBs, or loaded from the snapshot
written beside the database on ``close`` when the database has not been written since.

All SQLite work runs off the event loop (``_sqlite_threads``): writes on one dedicated thread
owning the writer connection (which also serialises them, so idempotency checks cannot race),
reads on a small pool of threads each with its own connection. A recall's two arms run in one
reader hop (:meth:`SQLiteStore.hybrid_search`). Several processes may share one file (gateway
workers): every write transaction takes the file's write lock (``BEGIN IMMEDIATE``) and bumps a
generation counter; a search that finds the counter moved by someone else first indexes the
chunks written since (chunk ids only grow), while their deletions are dropped when hits are
re-read. Graph nodes of vectors another process deleted stay until the next restart.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from astrocyte.config import validate_model
from astrocyte.errors import ProviderUnavailableError, ValidationError
from astrocyte.fusion import text_key
from astrocyte.stores import _sqlite_search as search
from astrocyte.stores import _sqlite_state as keyed
from astrocyte.stores import _sqlite_writes as writes
from astrocyte.stores._sqlite_schema import SCHEMA, upgrade
from astrocyte.stores._sqlite_sql import filter_sql, fts_query, fts_words, selector_sql, text_hash
from astrocyte.stores._sqlite_threads import SQLiteThreads
from astrocyte.stores._vector_index import IndexSettings, Snapshot, VectorIndex
from astrocyte.types import (
    BankStats,
    ComponentHealth,
    ForgetSelector,
    InsertOutcome,
    MemoryRecord,
    SearchFilters,
    StoredHit,
)

__all__ = ["SQLiteStore", "SQLiteStoreConfig", "fts_query", "fts_words"]

T = TypeVar("T")


class SQLiteStoreConfig(BaseModel):
    """``store_config`` of the ``sqlite`` store."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="database file; parent directories are created")
    busy_timeout_ms: int = Field(default=5000, ge=0)
    # Readers share the GIL with the event loop: one per core beyond the loop's (measured on 2 cores:
    # 1 reader serves more recalls than 2 or 4, which spend their time handing the GIL around).
    read_connections: int = Field(
        default_factory=lambda: max(1, min(4, (os.cpu_count() or 1) - 1)), ge=1, le=64
    )
    index_connectivity: int = Field(default=16, ge=4, le=128)
    index_expansion_add: int = Field(default=40, ge=8, le=1024)
    index_expansion_search: int = Field(
        default=256,
        ge=8,
        le=4096,
        description="search beam width of a bank's graph at 100k vectors; other sizes scale it with "
        "the fourth root of their size (x0.56 at 10k, x1.78 at 1M; at least half of it) to hold recall",
    )
    index_dtype: Literal["f32", "f16", "i8"] = "i8"
    exact_search_max: int = Field(
        default=4096,
        ge=0,
        description="filtered candidate sets up to this many chunks are scored exactly",
    )
    # Measured here (384 dims, i8, 100 candidates): brute force over a bank's in-memory vectors
    # ~210 us at 8k, ~300 us at 12k; the graph search ~240-260 us. Up to ~10k exact costs no more.
    index_exact_max: int = Field(
        default=8192,
        ge=0,
        description="banks up to this many vectors are searched exactly instead of through the graph",
    )
    keyword_rank_window: int = Field(
        default=1000,
        ge=1,
        description="keyword queries matching more chunks than this rank the most recent "
        "this many plus the chunks holding every word",
    )
    index_snapshot: bool = Field(default=True, description="save the vector index beside the file on close")
    hit_cache_rows: int = Field(
        default=50_000,
        ge=0,
        description="search hits (chunk text, tags, metadata) kept parsed in memory; 0 disables",
    )


def _phrase(query: str) -> search.Phrase | None:
    """The query as an exact-text lookup (see :func:`~astrocyte.stores._sqlite_search.keyword_ranked`)."""
    key = text_key(query)
    return search.Phrase(key, text_hash(query)) if key else None


class SQLiteStore:
    """The embedded :class:`~astrocyte.providers.Store`: one SQLite file plus an in-memory ANN index.

    Config keys: ``path`` (required), ``busy_timeout_ms`` (5000), ``read_connections`` (CPUs - 1, 1 to 4),
    ``hit_cache_rows`` (50000), and the
    vector index knobs ``index_connectivity`` (16), ``index_expansion_add`` (40),
    ``index_expansion_search`` (256), ``index_dtype`` (``i8``), ``index_exact_max`` (8192),
    ``exact_search_max`` (4096),
    ``keyword_rank_window`` (1000),
    ``index_snapshot`` (true).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._settings = validate_model(SQLiteStoreConfig, config)
        self._path = Path(self._settings.path).expanduser()
        self._index = VectorIndex(
            IndexSettings(
                connectivity=self._settings.index_connectivity,
                expansion_add=self._settings.index_expansion_add,
                expansion_search=self._settings.index_expansion_search,
                dtype=self._settings.index_dtype,
                exact_below=self._settings.index_exact_max,
            )
        )
        self._limits = search.SearchLimits(
            exact_max=self._settings.exact_search_max, window=self._settings.keyword_rank_window
        )
        self._hit_rows = search.HitRows(self._settings.hit_cache_rows)
        self._terms = search.TermStats()
        self._threads = SQLiteThreads(
            self._path, self._settings.busy_timeout_ms, self._settings.read_connections
        )
        self._dimension: int | None = None
        self._generation = 0  # the file's write generation the index reflects
        self._synced_id = 0  # every chunk id up to this one is in the index
        self._file_id = ""  # store_meta's file_id (index snapshots name the file they belong to)

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` naming unknown or ill-typed keys."""
        validate_model(SQLiteStoreConfig, mapping)

    @classmethod
    def contract_config(cls, tmp_path: Path) -> Mapping[str, Any] | None:
        """Configuration the store contract kit uses: a fresh file in ``tmp_path``."""
        return {"path": str(tmp_path / "contract-sqlite.db")}

    @property
    def _snapshot_dir(self) -> Path:
        return self._path.with_name(self._path.name + ".vectors")

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or open the file, apply the schema and build (or load) the vector index."""
        if self._threads.running:
            return
        self._threads.start()
        try:
            await self._write(self._open_sync)
        except sqlite3.Error as exc:
            await self.close()
            raise ProviderUnavailableError(f"cannot open SQLite database {self._path}: {exc}") from exc

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._threads.connect_writer()
        writer.executescript(SCHEMA)
        writer.executescript(keyed.SCHEMA)
        upgrade(writer)
        meta = dict(writer.execute("SELECT key, value FROM store_meta").fetchall())
        self._dimension = int(meta["dimension"]) if meta.get("dimension") is not None else None
        self._generation = int(meta["generation"])
        self._file_id = str(meta["file_id"])
        self._synced_id = writer.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        current = Snapshot(self._file_id, self._generation, self._synced_id)
        saved = self._index.load(self._snapshot_dir, current) if self._settings.index_snapshot else None
        if saved is None:
            self._rebuild_index()
        elif saved != current:
            self._bring_up_to_date(saved)
        self._threads.connect_readers()

    def _bring_up_to_date(self, saved: Snapshot) -> None:
        """After loading a snapshot older than the file (the last run did not close, or another
        process wrote since): drop the vectors of chunks deleted since, index those written since.
        Costs a read of the chunk ids and the new chunks' vectors, not a rebuild."""
        assert self._threads.writer is not None
        conn = self._threads.writer
        for bank_id, keys in self._index.bank_keys().items():
            live = np.fromiter(
                (
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM chunks WHERE bank_id = ? AND id <= ?", (bank_id, saved.synced_id)
                    )
                ),
                dtype=np.uint64,
            )
            gone = np.setdiff1d(keys, live, assume_unique=True)
            if len(gone):
                self._index.remove(bank_id, gone.tolist())
        self._synced_id = saved.synced_id
        self._catch_up_sync()

    def _rebuild_index(self) -> None:
        """Re-index every chunk vector from the BLOBs, one bank at a time."""
        assert self._threads.writer is not None
        rows = self._threads.writer.execute("SELECT bank_id, id, embedding FROM chunks ORDER BY bank_id, id")
        bank: str | None = None
        keys: list[int] = []
        blobs: list[bytes] = []
        for bank_id, key, blob in rows:
            if bank_id != bank or len(keys) >= 20_000:
                self._index_blobs(bank, keys, blobs)
                bank, keys, blobs = bank_id, [], []
            keys.append(key)
            blobs.append(blob)
        self._index_blobs(bank, keys, blobs)

    def _index_blobs(self, bank_id: str | None, keys: list[int], blobs: list[bytes]) -> None:
        if bank_id is None or not keys or self._dimension is None:
            return
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(keys), self._dimension)
        self._index.add(bank_id, keys, vectors, bulk=True)

    async def close(self) -> None:
        """Snapshot the index (when enabled), close every connection and stop the threads."""
        if not self._threads.running:
            return
        try:
            await self._write(self._close_sync)
        finally:
            self._threads.stop()

    def _close_sync(self) -> None:
        if self._threads.writer is not None and self._settings.index_snapshot:
            try:
                self._index.save(
                    self._snapshot_dir, Snapshot(self._file_id, self._generation, self._synced_id)
                )
            except (OSError, RuntimeError):
                pass  # a missing snapshot only costs a rebuild on the next open
        self._index.close()
        self._threads.close_connections()

    # -- thread plumbing -------------------------------------------------------------------------

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._threads.write(fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._threads.read(fn, *args)

    def _bump_generation(self, conn: sqlite3.Connection) -> bool:
        """Count this write in the file; True when no other process wrote since the index was
        last synced (then the index plus this write is the whole file again)."""
        (generation,) = conn.execute(
            "UPDATE store_meta SET value = value + 1 WHERE key = 'generation' RETURNING value"
        ).fetchone()
        in_sync = int(generation) == self._generation + 1
        if in_sync:
            self._generation = int(generation)
        return in_sync

    async def _catch_up(self) -> None:
        await self._write(self._catch_up_sync)

    def _catch_up_sync(self) -> None:
        """Index the chunks another process (or store instance) wrote to the file since our last
        sync. Its deletions need nothing: searches re-read hits from the file, which drops them."""
        conn = self._threads.writer
        assert conn is not None
        meta = dict(conn.execute("SELECT key, value FROM store_meta").fetchall())
        if self._dimension is None and meta.get("dimension") is not None:
            self._dimension = int(meta["dimension"])
        rows = conn.execute(
            "SELECT bank_id, id, embedding FROM chunks WHERE id > ? ORDER BY bank_id, id", (self._synced_id,)
        ).fetchall()
        for bank_id, group in groupby(rows, key=itemgetter(0)):
            fresh = [r for r in group if not self._index.contains(bank_id, r[1])]
            self._index_blobs(bank_id, [r[1] for r in fresh], [r[2] for r in fresh])
        self._synced_id = max([self._synced_id, *(row[1] for row in rows)])
        self._generation = int(meta["generation"])

    # -- banks -----------------------------------------------------------------------------------

    async def create_bank(self, bank_id: str) -> bool:
        """Create the bank if absent; True when this call created it."""
        return await self._write(self._create_bank_sync, bank_id)

    def _create_bank_sync(self, bank_id: str) -> bool:
        with self._threads.transaction() as conn:
            return writes.ensure_bank(conn, bank_id)

    async def bank_exists(self, bank_id: str) -> bool:
        return await self._read(writes.bank_exists, bank_id)

    async def list_banks(self) -> list[str]:
        return await self._read(
            lambda conn: [r[0] for r in conn.execute("SELECT bank_id FROM banks ORDER BY 1")]
        )

    async def delete_bank(self, bank_id: str) -> int:
        """Delete the bank with its memories; returns their number (0 for an absent bank)."""
        return await self._write(self._delete_bank_sync, bank_id)

    def _delete_bank_sync(self, bank_id: str) -> int:
        with self._threads.transaction() as conn:
            deleted, _ = writes.delete_memories(conn, "m.bank_id = ?", [bank_id])
            conn.execute("DELETE FROM banks WHERE bank_id = ?", (bank_id,))
            self._bump_generation(conn)
        self._index.drop_bank(bank_id)
        return deleted

    async def bank_stats(self, bank_id: str) -> BankStats:
        """Memory and chunk counts and the retained-at range; ``NotFoundError`` for an absent bank."""
        return await self._read(writes.bank_stats, bank_id)

    # -- writes ----------------------------------------------------------------------------------

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """Write ``records`` in one transaction, deduplicating on ``(bank_id, idempotency_key)``."""
        if not records:
            return []
        prepared = [writes.vectors_of(record) for record in records]
        return await self._write(self._insert_sync, records, prepared)

    def _insert_sync(self, records: Sequence[MemoryRecord], vectors: list[np.ndarray]) -> list[InsertOutcome]:
        with self._threads.transaction() as conn:
            dimension = writes.check_dimension(conn, vectors)
            for bank_id in dict.fromkeys(record.bank_id for record in records):
                writes.ensure_bank(conn, bank_id)
            outcomes, added = writes.insert_records(conn, records, vectors)
            in_sync = self._bump_generation(conn)
        self._dimension = dimension
        for bank_id, (keys, rows) in added.items():
            if keys:
                self._index.add(bank_id, keys, rows[0] if len(rows) == 1 else np.vstack(rows))
        if in_sync and any(keys for keys, _ in added.values()):
            self._synced_id = max(max(keys) for keys, _ in added.values() if keys)
        return outcomes

    async def upsert_keyed(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """One memory per ``(bank_id, memory_key)``, replaced in one transaction (see the protocol)."""
        if not records:
            return []
        prepared = [writes.vectors_of(record) for record in records]
        return await self._write(self._upsert_keyed_sync, records, prepared)

    def _upsert_keyed_sync(
        self, records: Sequence[MemoryRecord], vectors: list[np.ndarray]
    ) -> list[InsertOutcome]:
        with self._threads.transaction() as conn:
            dimension = writes.check_dimension(conn, vectors)
            outcomes, added, removed = keyed.upsert_keyed(conn, records, vectors)
            in_sync = self._bump_generation(conn)
        self._dimension = dimension
        # Only after COMMIT, like insert and forget: a rolled-back replace leaves the index alone.
        for bank_id, chunk_ids in removed:
            self._index.remove(bank_id, chunk_ids)
        for bank_id, (ids, rows) in added.items():
            if ids:
                self._index.add(bank_id, ids, np.vstack(rows))
        if in_sync and any(ids for ids, _ in added.values()):
            self._synced_id = max(max(ids) for ids, _ in added.values() if ids)
        return outcomes

    async def forget_keys(self, bank_id: str, memory_keys: Sequence[str]) -> int:
        """Delete the memories held under ``memory_keys``; returns how many went."""
        return await self._write(self._forget_keys_sync, bank_id, list(memory_keys))

    def _forget_keys_sync(self, bank_id: str, memory_keys: list[str]) -> int:
        with self._threads.transaction() as conn:
            deleted, chunk_ids = keyed.forget_keys(conn, bank_id, memory_keys)
            self._bump_generation(conn)
        self._index.remove(bank_id, chunk_ids)
        return deleted

    async def find_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The memory id holding each ``(bank_id, idempotency_key)`` of ``keys`` that is stored."""
        if not keys:
            return {}
        return await self._read(writes.find_keys, list(keys))

    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        """Delete the memories ``selector`` picks (selectors AND together); returns their number."""
        where, params = selector_sql(bank_id, selector)
        return await self._write(self._forget_sync, bank_id, where, params)

    def _forget_sync(self, bank_id: str, where: str, params: list[Any]) -> int:
        with self._threads.transaction() as conn:
            deleted, chunk_ids = writes.delete_memories(conn, where, params)
            if deleted:
                self._bump_generation(conn)
        # Only after COMMIT: a failed delete must leave the vectors searchable.
        self._index.remove(bank_id, chunk_ids)
        if self._index.needs_rebuild(bank_id):
            self._reindex_bank(bank_id)
        return deleted

    def _reindex_bank(self, bank_id: str) -> None:
        """Rebuild one bank's graph from its BLOBs after heavy deletion left it mostly tombstones."""
        assert self._threads.writer is not None
        rows = self._threads.writer.execute(
            "SELECT id, embedding FROM chunks WHERE bank_id = ?", (bank_id,)
        ).fetchall()
        self._index.drop_bank(bank_id)
        self._index_blobs(bank_id, [r[0] for r in rows], [r[1] for r in rows])

    # -- search ----------------------------------------------------------------------------------

    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by cosine similarity, best first; filters are exact."""
        banks = list(dict.fromkeys(bank_ids))
        query = await self._query_vector(embedding) if k > 0 and banks else None
        if query is None:
            return []
        hits = await self._read(self._vector_search_sync, banks, query, k, filters, True)
        if hits is None:  # the file changed under the index: sync, then search again
            await self._catch_up()
            hits = await self._read(self._vector_search_sync, banks, query, k, filters, False)
        return hits or []

    def _vector_search_sync(
        self,
        conn: sqlite3.Connection,
        banks: list[str],
        query: np.ndarray,
        k: int,
        filters: SearchFilters,
        check_sync: bool,
    ) -> list[StoredHit] | None:
        """The search; None when ``check_sync`` finds the file written by someone else since the
        index was last synced (one indexed lookup, so every search can afford it)."""
        if check_sync and writes.generation(conn) != self._generation:
            return None
        scored = search.vector_scored(conn, self._index, banks, query, k, filters, self._limits.exact_max)
        return list(search.hydrate(conn, self._hit_rows, [scored], banks)[0])

    async def _query_vector(self, embedding: np.ndarray) -> np.ndarray | None:
        """``embedding`` as a float32 vector of the store's dimension; None while the store holds
        no vectors at all (after checking the file for another process's first write)."""
        if self._dimension is None:
            await self._catch_up()
            if self._dimension is None:
                return None
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if query.size != self._dimension:
            raise ValidationError(
                f"query vector has {query.size} dimensions but the store holds {self._dimension}",
                code="embedding_dimension_mismatch",
            )
        return query

    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by BM25 (higher is better); any query text is safe."""
        banks = list(dict.fromkeys(bank_ids))
        words = fts_words(query)
        if k <= 0 or not banks or not words:
            return []
        return await self._read(self._keyword_sync, banks, words, _phrase(query), k, filters)

    def _keyword_sync(
        self,
        conn: sqlite3.Connection,
        banks: list[str],
        words: list[str],
        phrase: search.Phrase | None,
        k: int,
        filters: SearchFilters,
    ) -> list[StoredHit]:
        words = self._terms.choose(conn, words, self._index.total(), writes.generation(conn))
        if not words:
            return []
        foreign, window = self._foreign(banks), self._limits.window
        return search.keyword_search(conn, self._hit_rows, banks, words, k, filters, window, foreign, phrase)

    def _foreign(self, banks: list[str]) -> int | None:
        """How many chunks other banks hold when ``banks`` hold most of the store (keyword search
        then matches the words alone, see ``keyword_ranked``), else None. Index sizes are per-bank
        chunk counts, known without a query; an undercount only costs a bank-scoped retry."""
        own, total = self._index.size(banks), self._index.total()
        return total - own if 2 * own >= total else None

    async def hybrid_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, query: str, k: int, filters: SearchFilters
    ) -> tuple[Sequence[StoredHit], Sequence[StoredHit]]:
        """``(vector_search(...), keyword_search(...))`` with the same arguments, in one worker-thread
        hop and one statement reading the hits of both arms."""
        banks = list(dict.fromkeys(bank_ids))
        vector = await self._query_vector(embedding) if k > 0 and banks else None
        if vector is None:
            return [], await self.keyword_search(banks, query, k, filters)
        words, phrase = fts_words(query), _phrase(query)
        arms = await self._read(self._hybrid_sync, banks, vector, words, phrase, k, filters, True)
        if arms is None:  # the file changed under the index: sync, then search again
            await self._catch_up()
            arms = await self._read(self._hybrid_sync, banks, vector, words, phrase, k, filters, False)
        assert arms is not None
        return arms

    def _hybrid_sync(
        self,
        conn: sqlite3.Connection,
        banks: list[str],
        vector: np.ndarray,
        words: list[str],
        phrase: search.Phrase | None,
        k: int,
        filters: SearchFilters,
        check_sync: bool,
    ) -> tuple[Sequence[StoredHit], Sequence[StoredHit]] | None:
        generation = writes.generation(conn)
        if check_sync and generation != self._generation:
            return None
        words = self._terms.choose(conn, words, self._index.total(), generation)
        foreign = self._foreign(banks)
        return search.both_arms(
            conn,
            self._hit_rows,
            self._index,
            banks,
            vector,
            words,
            k,
            filters,
            self._limits,
            foreign,
            phrase,
            self._threads.searcher,
        )

    async def count(self, bank_ids: Sequence[str], filters: SearchFilters) -> int:
        """How many memories in ``bank_ids`` match ``filters``."""
        banks = list(dict.fromkeys(bank_ids))
        if not banks:
            return 0
        where, params = filter_sql(banks, filters)
        return await self._read(
            lambda conn: int(
                conn.execute(f"SELECT COUNT(*) FROM memories m WHERE {where}", params).fetchone()[0]
            )
        )

    # -- state, leases, health -------------------------------------------------------------------

    async def get_state(self, namespace: str, key: str) -> str | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT value FROM state WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_state(self, namespace: str, key: str, value: str) -> None:
        await self._write(self._set_state_sync, namespace, key, value)

    def _set_state_sync(self, namespace: str, key: str, value: str) -> None:
        with self._threads.transaction() as conn:
            conn.execute(
                "INSERT INTO state (namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, value),
            )

    async def try_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew ``name`` for ``holder``; wall-clock expiry, so it works across processes."""
        return await self._write(self._try_lease_sync, name, holder, ttl_seconds)

    def _try_lease_sync(self, name: str, holder: str, ttl_seconds: float) -> bool:
        now = time.time()
        with self._threads.transaction() as conn:
            changed = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, now + ttl_seconds, now),
            ).rowcount
        return bool(changed)

    async def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``name`` when ``holder`` holds it; True when it did (and it had not expired)."""
        return await self._write(self._release_lease_sync, name, holder)

    def _release_lease_sync(self, name: str, holder: str) -> bool:
        with self._threads.transaction() as conn:
            row = conn.execute(
                "DELETE FROM leases WHERE name = ? AND holder = ? RETURNING expires_at", (name, holder)
            ).fetchone()
        return row is not None and float(row[0]) > time.time()

    async def health(self) -> ComponentHealth:
        """Run a trivial query on a reader connection and report its latency."""
        started = time.perf_counter()
        try:
            await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
        except (sqlite3.Error, ProviderUnavailableError) as exc:
            return ComponentHealth(name="store", healthy=False, detail=f"sqlite: {exc}")
        latency = (time.perf_counter() - started) * 1000
        return ComponentHealth(
            name="store", healthy=True, detail=f"sqlite at {self._path}", latency_ms=round(latency, 3)
        )
