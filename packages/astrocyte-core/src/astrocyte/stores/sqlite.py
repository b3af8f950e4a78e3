"""``sqlite``: the embedded default store. One SQLite file (WAL) is the source of truth.

Layout: ``banks``, ``memories`` (one row per retained memory, with its tags, metadata and times),
``memory_tags`` (for tag filters), ``chunks`` (text and the float32 embedding as a BLOB),
``chunks_fts`` (FTS5 over chunk text, kept in step by triggers), ``store_meta`` (embedding
dimension, a write generation), ``state`` and ``leases``.

Vector search goes through an in-memory usearch HNSW index per bank (``_vector_index``) keyed by
chunk rowid; candidates are re-read from SQLite, which re-applies filters, drops rows deleted
meanwhile and re-scores with the exact float32 cosine. Filters are applied after the ANN search
with over-fetch; a selective filter is answered by an exact scan of the matching rows instead.
On ``open`` the index is rebuilt from the BLOBs, or loaded from the snapshot written beside the
database on ``close`` when the database has not been written since.

All SQLite work runs off the event loop: writes on one dedicated thread owning the writer
connection (which also serialises them, so idempotency checks cannot race), reads on a small
pool of threads each with its own connection. Several processes may share one file (gateway
workers): every write transaction takes the file's write lock (``BEGIN IMMEDIATE``) and bumps a
generation counter; a search that finds the counter moved by someone else first indexes the
chunks written since (chunk ids only grow), while their deletions are dropped when hits are
re-read. Graph nodes of vectors another process deleted stay until the next restart.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from astrocyte.config import validate_model
from astrocyte.errors import ConflictError, NotFoundError, ProviderUnavailableError, ValidationError
from astrocyte.stores._vector_index import IndexSettings, VectorIndex
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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WORD = re.compile(r"\w+")
_MAX_QUERY_TERMS = 32
# Words so common that OR-ing them into a keyword query only costs time and adds noise; they are
# dropped unless the query has nothing else.
_STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i if in into is it "
    "its me my no not of on or our she so that the their them then there they this to was we were what "
    "when where which who why will with you your".split()
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', 1), ('generation', 0);
CREATE TABLE IF NOT EXISTS banks (bank_id TEXT PRIMARY KEY, created_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    memory_id TEXT NOT NULL,
    bank_id TEXT NOT NULL,
    text TEXT NOT NULL,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    occurred_at TEXT,
    retained_at TEXT NOT NULL,
    event_us INTEGER NOT NULL,      -- COALESCE(occurred_at, retained_at) as UTC microseconds
    retained_us INTEGER NOT NULL,
    source TEXT,
    idempotency_key TEXT,
    UNIQUE (bank_id, memory_id),
    UNIQUE (bank_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS memories_by_event ON memories (bank_id, event_us);
CREATE INDEX IF NOT EXISTS memories_by_retained ON memories (bank_id, retained_us);
CREATE TABLE IF NOT EXISTS memory_tags (
    memory INTEGER NOT NULL, bank_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (memory, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_tags_by_tag ON memory_tags (bank_id, tag, memory);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: it is the vector index key
    memory INTEGER NOT NULL,
    bank_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    bank_key TEXT NOT NULL,                 -- one FTS token naming the bank (see _bank_key)
    embedding BLOB NOT NULL                 -- float32, native byte order
);
CREATE INDEX IF NOT EXISTS chunks_by_memory ON chunks (memory);
CREATE INDEX IF NOT EXISTS chunks_by_bank ON chunks (bank_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, bank_key, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, bank_key) VALUES (new.id, new.text, new.bank_key);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, bank_key) VALUES ('delete', old.id, old.text, old.bank_key);
END;
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
"""

_HIT_COLUMNS = (
    "c.id, c.chunk_index, c.text, m.memory_id, m.bank_id, m.tags, m.metadata, "
    "m.occurred_at, m.retained_at, m.source"
)


class SQLiteStoreConfig(BaseModel):
    """``store_config`` of the ``sqlite`` store."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="database file; parent directories are created")
    busy_timeout_ms: int = Field(default=5000, ge=0)
    read_connections: int = Field(default=4, ge=1, le=64)
    index_connectivity: int = Field(default=16, ge=4, le=128)
    index_expansion_add: int = Field(default=40, ge=8, le=1024)
    index_expansion_search: int = Field(default=256, ge=8, le=4096)
    index_dtype: Literal["f32", "f16", "i8"] = "i8"
    exact_search_max: int = Field(
        default=4096,
        ge=0,
        description="banks or filtered candidate sets up to this many vectors are searched exactly",
    )
    keyword_rank_window: int = Field(
        default=1000,
        ge=1,
        description="keyword queries matching more chunks than this rank the most recent "
        "this many plus the chunks holding every word",
    )
    index_snapshot: bool = Field(default=True, description="save the vector index beside the file on close")


class SQLiteStore:
    """The embedded :class:`~astrocyte.providers.Store`: one SQLite file plus an in-memory ANN index.

    Config keys: ``path`` (required), ``busy_timeout_ms`` (5000), ``read_connections`` (4), and the
    vector index knobs ``index_connectivity`` (16), ``index_expansion_add`` (40),
    ``index_expansion_search`` (256), ``index_dtype`` (``i8``), ``exact_search_max`` (4096),
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
                exact_below=self._settings.exact_search_max,
            )
        )
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._reader_conns: list[sqlite3.Connection] = []
        self._dimension: int | None = None
        self._generation = 0  # the file's write generation the index reflects
        self._synced_id = 0  # every chunk id up to this one is in the index

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
        if self._writer_pool is not None:
            return
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="astrocyte-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(
            self._settings.read_connections, thread_name_prefix="astrocyte-sqlite-reader"
        )
        try:
            await self._write(self._open_sync)
        except sqlite3.Error as exc:
            await self.close()
            raise ProviderUnavailableError(f"cannot open SQLite database {self._path}: {exc}") from exc

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect(cache_kib=32_768)
        self._writer.executescript(_SCHEMA)
        meta = dict(self._writer.execute("SELECT key, value FROM store_meta").fetchall())
        self._dimension = int(meta["dimension"]) if meta.get("dimension") is not None else None
        self._generation = int(meta["generation"])
        self._synced_id = self._writer.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        if not (self._settings.index_snapshot and self._index.load(self._snapshot_dir, self._generation)):
            self._rebuild_index()
        for _ in range(self._settings.read_connections):
            conn = self._connect(cache_kib=8_192)
            self._reader_conns.append(conn)
            self._readers.put(conn)

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._settings.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives application crashes; only an OS crash can lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Page caches are per connection; readers keep theirs small and share the OS page cache.
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    def _rebuild_index(self) -> None:
        """Re-index every chunk vector from the BLOBs, one bank at a time."""
        assert self._writer is not None
        rows = self._writer.execute("SELECT bank_id, id, embedding FROM chunks ORDER BY bank_id, id")
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
        if self._writer_pool is None:
            return
        try:
            await self._write(self._close_sync)
        finally:
            self._writer_pool.shutdown(wait=True)
            if self._reader_pool is not None:
                self._reader_pool.shutdown(wait=True)
            self._writer_pool = self._reader_pool = None

    def _close_sync(self) -> None:
        if self._writer is not None and self._settings.index_snapshot:
            try:
                self._index.save(self._snapshot_dir, self._generation)
            except (OSError, RuntimeError):
                pass  # a missing snapshot only costs a rebuild on the next open
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        self._readers = queue.SimpleQueue()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- thread plumbing -------------------------------------------------------------------------

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._writer_pool is None:
            raise ProviderUnavailableError("the SQLite store is not open; call open() first")
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader_pool is None:
            raise ProviderUnavailableError("the SQLite store is not open; call open() first")
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, self._with_reader, fn, args
        )

    def _with_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._readers.get()
        try:
            return fn(conn, *args)
        finally:
            self._readers.put(conn)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE on the writer connection: takes the write lock up front, so a
        read-then-write (idempotency check, then insert) cannot interleave with another writer."""
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
        conn = self._writer
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
        with self._transaction() as conn:
            return _ensure_bank(conn, bank_id)

    async def bank_exists(self, bank_id: str) -> bool:
        return await self._read(_bank_exists, bank_id)

    async def list_banks(self) -> list[str]:
        return await self._read(
            lambda conn: [r[0] for r in conn.execute("SELECT bank_id FROM banks ORDER BY 1")]
        )

    async def delete_bank(self, bank_id: str) -> int:
        """Delete the bank with its memories; returns their number (0 for an absent bank)."""
        return await self._write(self._delete_bank_sync, bank_id)

    def _delete_bank_sync(self, bank_id: str) -> int:
        with self._transaction() as conn:
            deleted, _ = _delete_memories(conn, "m.bank_id = ?", [bank_id])
            conn.execute("DELETE FROM banks WHERE bank_id = ?", (bank_id,))
            self._bump_generation(conn)
        self._index.drop_bank(bank_id)
        return deleted

    async def bank_stats(self, bank_id: str) -> BankStats:
        """Memory and chunk counts and the retained-at range; ``NotFoundError`` for an absent bank."""
        return await self._read(_bank_stats, bank_id)

    # -- writes ----------------------------------------------------------------------------------

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """Write ``records`` in one transaction, deduplicating on ``(bank_id, idempotency_key)``."""
        if not records:
            return []
        prepared = [_vectors_of(record) for record in records]
        return await self._write(self._insert_sync, records, prepared)

    def _insert_sync(self, records: Sequence[MemoryRecord], vectors: list[np.ndarray]) -> list[InsertOutcome]:
        outcomes: list[InsertOutcome] = []
        added: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        with self._transaction() as conn:
            dimension = _check_dimension(conn, vectors)
            for bank_id in dict.fromkeys(record.bank_id for record in records):
                _ensure_bank(conn, bank_id)
            batch_keys: dict[tuple[str, str], str] = {}
            for record, matrix in zip(records, vectors, strict=True):
                existing = _existing_for_key(conn, record, batch_keys)
                if existing is not None:
                    outcomes.append(InsertOutcome(memory_id=existing, deduplicated=True))
                    continue
                try:
                    chunk_ids = _insert_record(conn, record, matrix)
                except UnicodeEncodeError as exc:
                    # A lone surrogate (valid in JSON, not in UTF-8) cannot be stored as text.
                    raise ValidationError(
                        f"memory {record.memory_id!r} holds text that is not valid Unicode ({exc.reason})",
                        code="text_not_unicode",
                    ) from None
                keys, rows = added.setdefault(record.bank_id, ([], []))
                keys.extend(chunk_ids)
                rows.append(matrix)
                outcomes.append(InsertOutcome(memory_id=record.memory_id, deduplicated=False))
            in_sync = self._bump_generation(conn)
        self._dimension = dimension
        for bank_id, (keys, rows) in added.items():
            self._index.add(bank_id, keys, np.vstack(rows))
        if in_sync and added:
            self._synced_id = max(max(keys) for keys, _ in added.values())
        return outcomes

    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        """Delete the memories ``selector`` picks (selectors AND together); returns their number."""
        where, params = _selector_sql(bank_id, selector)
        return await self._write(self._forget_sync, bank_id, where, params)

    def _forget_sync(self, bank_id: str, where: str, params: list[Any]) -> int:
        with self._transaction() as conn:
            deleted, chunk_ids = _delete_memories(conn, where, params)
            if deleted:
                self._bump_generation(conn)
        # Only after COMMIT: a failed delete must leave the vectors searchable.
        self._index.remove(bank_id, chunk_ids)
        if self._index.needs_rebuild(bank_id):
            self._reindex_bank(bank_id)
        return deleted

    def _reindex_bank(self, bank_id: str) -> None:
        """Rebuild one bank's graph from its BLOBs after heavy deletion left it mostly tombstones."""
        assert self._writer is not None
        rows = self._writer.execute(
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
        if k <= 0 or not banks:
            return []
        if self._dimension is None:
            await self._catch_up()  # another process may have written the first vectors
            if self._dimension is None:
                return []
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if query.size != self._dimension:
            raise ValidationError(
                f"query vector has {query.size} dimensions but the store holds {self._dimension}",
                code="embedding_dimension_mismatch",
            )
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
        if check_sync and _generation(conn) != self._generation:
            return None
        where, params = _filter_sql(banks, filters)
        total = self._index.size(banks)
        if _has_filters(filters):
            exact = _exact_candidates(conn, where, params, self._settings.exact_search_max)
            if exact is not None:
                return _rescore(conn, exact, query, k, "", [])
            # Not selective: at least exact_search_max rows match, so k*total/exact_search_max
            # neighbours contain k matches on average; over-fetch, then widen until k are found.
            fetch = max(4 * k, k * total // max(self._settings.exact_search_max, 1))
        else:
            fetch = max(2 * k, 20)
        while True:
            keys = self._index.search(banks, query, fetch)
            hits = _rescore(conn, keys, query, k, where, params)
            if len(hits) >= k or fetch >= total:
                return hits
            fetch *= 4

    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by BM25 (higher is better); any query text is safe."""
        banks = list(dict.fromkeys(bank_ids))
        words = fts_words(query)
        if k <= 0 or not banks or not words:
            return []
        window = self._settings.keyword_rank_window
        # Index sizes are per-bank chunk counts, known without a query.
        dominant = 2 * self._index.size(banks) >= self._index.total()
        hits = await self._read(_keyword_search_sync, banks, words, k, filters, window, dominant)
        if dominant and len(hits) < k:
            # Foreign chunks may have crowded the searched banks' own out: ask again, bank-scoped.
            hits = await self._read(_keyword_search_sync, banks, words, k, filters, window, False)
        return hits

    async def count(self, bank_ids: Sequence[str], filters: SearchFilters) -> int:
        """How many memories in ``bank_ids`` match ``filters``."""
        banks = list(dict.fromkeys(bank_ids))
        if not banks:
            return 0
        where, params = _filter_sql(banks, filters)
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
        with self._transaction() as conn:
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
        with self._transaction() as conn:
            changed = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, now + ttl_seconds, now),
            ).rowcount
        return bool(changed)

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


# -- SQL helpers (run on a worker thread) --------------------------------------------------------


def _delete_memories(conn: sqlite3.Connection, where: str, params: list[Any]) -> tuple[int, list[int]]:
    """Delete matching memories with their tags and chunks (FTS rows go by trigger); returns how
    many memories went and the ids of their chunks (for the caller to drop from the index)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.doomed")
    conn.execute(f"INSERT INTO temp.doomed SELECT m.id FROM memories m WHERE {where}", params)
    chunk_ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE memory IN temp.doomed")]
    conn.execute("DELETE FROM chunks WHERE memory IN temp.doomed")
    conn.execute("DELETE FROM memory_tags WHERE memory IN temp.doomed")
    deleted = conn.execute("DELETE FROM memories WHERE id IN temp.doomed").rowcount
    return int(deleted), chunk_ids


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM store_meta WHERE key = 'generation'").fetchone()[0])


def _ensure_bank(conn: sqlite3.Connection, bank_id: str) -> bool:
    created_at = datetime.now(UTC).isoformat()
    cursor = conn.execute(
        "INSERT OR IGNORE INTO banks (bank_id, created_at) VALUES (?, ?)", (bank_id, created_at)
    )
    return bool(cursor.rowcount)


def _bank_exists(conn: sqlite3.Connection, bank_id: str) -> bool:
    return conn.execute("SELECT 1 FROM banks WHERE bank_id = ?", (bank_id,)).fetchone() is not None


def _bank_stats(conn: sqlite3.Connection, bank_id: str) -> BankStats:
    if not _bank_exists(conn, bank_id):
        raise NotFoundError(f"bank {bank_id!r} does not exist", code="bank_not_found")
    memories = conn.execute("SELECT COUNT(*) FROM memories WHERE bank_id = ?", (bank_id,)).fetchone()[0]
    chunks = conn.execute("SELECT COUNT(*) FROM chunks WHERE bank_id = ?", (bank_id,)).fetchone()[0]
    oldest = conn.execute(
        "SELECT retained_at FROM memories WHERE bank_id = ? ORDER BY retained_us ASC LIMIT 1", (bank_id,)
    ).fetchone()
    newest = conn.execute(
        "SELECT retained_at FROM memories WHERE bank_id = ? ORDER BY retained_us DESC LIMIT 1", (bank_id,)
    ).fetchone()
    return BankStats(
        bank_id=bank_id,
        memory_count=int(memories),
        chunk_count=int(chunks),
        oldest_retained_at=datetime.fromisoformat(oldest[0]) if oldest else None,
        newest_retained_at=datetime.fromisoformat(newest[0]) if newest else None,
    )


def _check_dimension(conn: sqlite3.Connection, vectors: list[np.ndarray]) -> int | None:
    """The file's vector size, recorded now when this is the first batch; raises, before anything
    is written, when a vector of the batch has another size."""
    sizes = {int(m.shape[1]) for m in vectors if m.shape[0]}
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'dimension'").fetchone()
    expected = int(row[0]) if row is not None else None
    if expected is None and len(sizes) == 1:
        expected = sizes.pop()
        conn.execute("INSERT INTO store_meta (key, value) VALUES ('dimension', ?)", (expected,))
    wrong = sorted(size for size in sizes if size != expected)
    if wrong:
        raise ValidationError(
            f"embedding has {wrong[0]} dimensions but the store holds {expected}-dimensional "
            "vectors; use the same embedder (and dimensions) the store was filled with",
            code="embedding_dimension_mismatch",
            details={"expected": expected, "got": wrong[0]},
        )
    return expected


def _vectors_of(record: MemoryRecord) -> np.ndarray:
    """The record's chunk vectors as one contiguous float32 matrix (rows in chunk order)."""
    if not record.chunks:
        return np.empty((0, 0), dtype=np.float32)
    rows = [np.asarray(chunk.embedding, dtype=np.float32).reshape(-1) for chunk in record.chunks]
    if len({row.size for row in rows}) > 1:
        raise ValidationError(
            "the chunks of one memory have vectors of different sizes", code="embedding_dimension_mismatch"
        )
    return np.ascontiguousarray(np.vstack(rows))


def _existing_for_key(
    conn: sqlite3.Connection, record: MemoryRecord, batch_keys: dict[tuple[str, str], str]
) -> str | None:
    """The memory id already holding ``record``'s idempotency key, in this batch or the file."""
    key = record.idempotency_key
    if key is None:
        return None
    scoped = (record.bank_id, key)
    if scoped in batch_keys:
        return batch_keys[scoped]
    row = conn.execute(
        "SELECT memory_id FROM memories WHERE bank_id = ? AND idempotency_key = ?", scoped
    ).fetchone()
    if row is not None:
        return str(row[0])
    batch_keys[scoped] = record.memory_id
    return None


def _insert_record(conn: sqlite3.Connection, record: MemoryRecord, vectors: np.ndarray) -> list[int]:
    """Insert one memory with its tags and chunks; returns the new chunk rowids."""
    event = record.occurred_at or record.retained_at
    tags = list(dict.fromkeys(record.tags))
    try:
        memory = conn.execute(
            "INSERT INTO memories (memory_id, bank_id, text, tags, metadata, occurred_at, retained_at, "
            "event_us, retained_us, source, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.memory_id,
                record.bank_id,
                record.text,
                json.dumps(tags),
                json.dumps(record.metadata, default=str),
                record.occurred_at.isoformat() if record.occurred_at else None,
                record.retained_at.isoformat(),
                _micros(event),
                _micros(record.retained_at),
                record.source,
                record.idempotency_key,
            ),
        ).lastrowid
    except sqlite3.IntegrityError as exc:
        raise ConflictError(
            f"memory id {record.memory_id!r} already exists in bank {record.bank_id!r}",
            code="memory_id_exists",
        ) from exc
    conn.executemany(
        "INSERT INTO memory_tags (memory, bank_id, tag) VALUES (?, ?, ?)",
        [(memory, record.bank_id, tag) for tag in tags],
    )
    chunk_ids: list[int] = []
    bank_key = _bank_key(record.bank_id)
    for chunk, vector in zip(record.chunks, vectors, strict=True):
        chunk_ids.append(
            conn.execute(
                "INSERT INTO chunks (memory, bank_id, chunk_index, text, bank_key, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (memory, record.bank_id, chunk.index, chunk.text, bank_key, vector.tobytes()),
            ).lastrowid
            or 0  # never 0: lastrowid is set after an INSERT into a rowid table
        )
    return chunk_ids


def _bank_key(bank_id: str) -> str:
    """The FTS token standing for ``bank_id``: letters and digits only, so it is one token."""
    return "k" + blake2b(bank_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _micros(moment: datetime) -> int:
    """UTC microseconds since the epoch; a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


def _has_filters(filters: SearchFilters) -> bool:
    return bool(filters.tags) or filters.start is not None or filters.end is not None


def _filter_sql(banks: Sequence[str], filters: SearchFilters, alias: str = "m") -> tuple[str, list[Any]]:
    """A WHERE clause over ``memories m`` for the banks and filters, with its parameters (only the
    bank part, on ``chunks c``, when ``alias`` is ``c``)."""
    params: list[Any]
    if len(banks) == 1:
        clauses, params = [f"{alias}.bank_id = ?"], [banks[0]]
    else:
        clauses, params = [f"{alias}.bank_id IN (SELECT value FROM json_each(?))"], [json.dumps(list(banks))]
    if alias != "m":
        return clauses[0], params
    if filters.start is not None:
        clauses.append("m.event_us >= ?")
        params.append(_micros(filters.start))
    if filters.end is not None:
        clauses.append("m.event_us < ?")
        params.append(_micros(filters.end))
    tags = list(dict.fromkeys(filters.tags))
    if tags:
        clauses.append(
            "(SELECT COUNT(*) FROM memory_tags t WHERE t.memory = m.id "
            "AND t.tag IN (SELECT value FROM json_each(?))) = ?"
        )
        params += [json.dumps(tags), len(tags)]
    return " AND ".join(clauses), params


def _selector_sql(bank_id: str, selector: ForgetSelector) -> tuple[str, list[Any]]:
    """A WHERE clause over ``memories m`` for a forget selector (validated here, off the thread)."""
    others = bool(selector.memory_ids or selector.tags or selector.before is not None)
    if selector.all_ and others:
        raise ValidationError(
            "forget with all_ must not be combined with other selectors", code="forget_selector_invalid"
        )
    if not selector.all_ and not others:
        raise ValidationError(
            "forget needs memory_ids, tags, before, or all_ (to clear the whole bank)",
            code="forget_selector_empty",
        )
    where, params = _filter_sql([bank_id], SearchFilters(tags=tuple(selector.tags)))
    if selector.memory_ids:
        where += " AND m.memory_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(list(selector.memory_ids)))
    if selector.before is not None:
        where += " AND m.retained_us < ?"
        params.append(_micros(selector.before))
    return where, params


def _exact_candidates(
    conn: sqlite3.Connection, where: str, params: list[Any], limit: int
) -> list[int] | None:
    """Chunk ids matching the filter when there are at most ``limit`` of them, else None."""
    rows = conn.execute(
        f"SELECT c.id FROM memories m JOIN chunks c ON c.memory = m.id WHERE {where} LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
    return None if len(rows) > limit else [r[0] for r in rows]


def _rescore(
    conn: sqlite3.Connection, keys: Sequence[int], query: np.ndarray, k: int, where: str, params: list[Any]
) -> list[StoredHit]:
    """Read candidate chunks (those still present and, with ``where``, matching it), score them by
    exact cosine against their stored float32 vectors, and return the best ``k`` as hits."""
    if not len(keys):
        return []
    # CROSS JOIN pins the join order: probe the few candidate ids, never scan the bank.
    join = f" CROSS JOIN memories m ON m.id = c.memory WHERE {where}" if where else ""
    rows = conn.execute(
        f"SELECT c.id, c.embedding FROM json_each(?) AS j CROSS JOIN chunks c ON c.id = j.value{join}",
        [json.dumps([int(key) for key in keys]), *params],
    ).fetchall()
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), query.size)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
    scores = np.clip((matrix @ query) / np.where(norms == 0, 1.0, norms), -1.0, 1.0)
    # Ties break on chunk id so results are deterministic.
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i][0]))[:k]
    return _hydrate(conn, [(rows[i][0], float(scores[i])) for i in order])


def _keyword_search_sync(
    conn: sqlite3.Connection,
    banks: list[str],
    words: list[str],
    k: int,
    filters: SearchFilters,
    window: int,
    dominant: bool,
) -> list[StoredHit]:
    """BM25 over the chunks holding any of ``words``, exact when at most ``window`` chunks match.

    BM25 costs a few microseconds per matching chunk, so a broad query over a large bank would
    cost tens of milliseconds. Past ``window`` matches the candidates are the ``window`` most recent
    matching chunks plus, over all time, the best chunks holding every word.

    Banks are restricted inside the MATCH expression (each chunk's ``bank_key`` column holds one
    token naming its bank), so FTS5 intersects posting lists instead of SQLite joining every match.
    When the searched banks hold most of the store (``dominant``) even that costs more than it
    saves, so the words are matched alone and the few foreign chunks are dropped on hydration.
    """
    in_words = f"{{text}} : ({' OR '.join(words)})"
    every_word = f"{{text}} : ({' AND '.join(words)})" if len(words) > 1 else None
    params: list[Any] = []
    scope = "FROM chunks_fts WHERE chunks_fts MATCH ?"
    if _has_filters(filters):
        where, params = _filter_sql(banks, filters)
        scope = "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN memories m ON m.id = c.memory "
        scope += f"WHERE chunks_fts MATCH ? AND {where}"
    elif not dominant:
        in_banks = "{bank_key} : (" + " OR ".join(f'"{_bank_key(bank)}"' for bank in banks) + ")"
        in_words += f" AND {in_banks}"
        every_word = every_word and f"{every_word} AND {in_banks}"
    fetch = 2 * k if dominant else k  # room for foreign chunks dropped on hydration
    # The bank_key column gets weight 0: only the words score.
    base = f"SELECT chunks_fts.rowid, bm25(chunks_fts, 1.0, 0.0) {scope}"
    limit = max(window, k)  # the window must hold k chunks to return k
    newest = conn.execute(
        f"SELECT chunks_fts.rowid {scope} ORDER BY chunks_fts.rowid DESC LIMIT 1 OFFSET ?",
        [in_words, *params, limit - 1],
    ).fetchone()
    if newest is None:
        ranked = conn.execute(f"{base} ORDER BY 2, 1 LIMIT ?", [in_words, *params, fetch]).fetchall()
    else:
        ranked = conn.execute(
            f"{base} AND chunks_fts.rowid >= ? ORDER BY 2, 1 LIMIT ?", [in_words, *params, newest[0], fetch]
        ).fetchall()
        if every_word:
            ranked += conn.execute(f"{base} ORDER BY 2, 1 LIMIT ?", [every_word, *params, fetch]).fetchall()
    best: dict[int, float] = {}
    for chunk_id, rank in ranked:
        best[chunk_id] = min(rank, best.get(chunk_id, rank))
    top = sorted(best.items(), key=lambda item: (item[1], item[0]))
    # FTS5's bm25() is lower-is-better (negative); the store contract wants higher-is-better.
    return _hydrate(conn, [(chunk_id, -rank) for chunk_id, rank in top], banks=banks, limit=k)


def _hydrate(
    conn: sqlite3.Connection,
    scored: list[tuple[int, float]],
    *,
    banks: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[StoredHit]:
    """Full hits for ``(chunk id, score)`` pairs, in the given order, skipping ids gone meanwhile
    and (with ``banks``) chunks of other banks; at most ``limit`` of them."""
    if not scored:
        return []
    in_banks = " WHERE c.bank_id IN (SELECT value FROM json_each(?))" if banks is not None else ""
    rows = conn.execute(
        f"SELECT {_HIT_COLUMNS} FROM json_each(?) AS j CROSS JOIN chunks c ON c.id = j.value "
        f"CROSS JOIN memories m ON m.id = c.memory{in_banks}",
        [json.dumps([chunk_id for chunk_id, _ in scored])]
        + ([json.dumps(list(banks))] if banks is not None else []),
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    kept = [(by_id[chunk_id], score) for chunk_id, score in scored if chunk_id in by_id]
    return [_hit(row, score) for row, score in kept[:limit]]


def _hit(row: Sequence[Any], score: float) -> StoredHit:
    _, chunk_index, text, memory_id, bank_id, tags, metadata, occurred_at, retained_at, source = row[:10]
    return StoredHit(
        memory_id=memory_id,
        bank_id=bank_id,
        chunk_index=chunk_index,
        text=text,
        score=score,
        tags=tuple(json.loads(tags)) if tags != "[]" else (),
        metadata=json.loads(metadata) if metadata != "{}" else {},
        occurred_at=datetime.fromisoformat(occurred_at) if occurred_at else None,
        retained_at=datetime.fromisoformat(retained_at),
        source=source,
    )


def fts_words(text: str) -> list[str]:
    """Arbitrary user text as a list of safe FTS5 terms (each a double-quoted word).

    Words are ``\\w+`` runs, so they hold no quote: FTS5 operators (``AND``, ``NEAR``, ``*``, ``:``,
    ``^``, parentheses) in the input are matched as plain words and no input can produce a syntax
    error. Very common words are dropped when the query has others.
    """
    words = list(dict.fromkeys(_WORD.findall(text.lower())))
    meaningful = [w for w in words if w not in _STOPWORDS]
    return [f'"{word}"' for word in (meaningful or words)[:_MAX_QUERY_TERMS]]


def fts_query(text: str) -> str | None:
    """The FTS5 MATCH expression (words OR-ed) for arbitrary user text, or None when it has no words."""
    words = fts_words(text)
    return " OR ".join(words) if words else None
