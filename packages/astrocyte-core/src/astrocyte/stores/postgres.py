"""PostgreSQL + pgvector store: the production store, shared by every gateway replica.

Vector search uses an HNSW index (cosine) with pgvector's iterative index scans, so filters by bank,
tags and time still return ``k`` rows; when the index cannot (very selective filters), an exact
scan driven by the filter indexes fills in. Keyword search uses a generated ``tsvector`` column with
a GIN index. Schema and migrations are in :mod:`astrocyte.stores._postgres_schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import numpy as np
from pgvector.asyncpg import register_vector
from pydantic import BaseModel, ConfigDict, Field, model_validator

from astrocyte.config import validate_model
from astrocyte.errors import (
    AstrocyteError,
    ConflictError,
    NotFoundError,
    ProviderUnavailableError,
    ValidationError,
)
from astrocyte.fusion import text_key
from astrocyte.stores import _postgres_schema as schema_mod
from astrocyte.stores import _postgres_state as keyed
from astrocyte.types import (
    BankStats,
    ComponentHealth,
    ForgetSelector,
    InsertOutcome,
    MemoryRecord,
    SearchFilters,
    StoredHit,
)

logger = logging.getLogger("astrocyte.stores.postgres")

# Errors that mean "the database cannot be reached right now", surfaced as 503 so callers retry.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError and refused/reset connections
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, statement cancelled, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)
_INSERT_ATTEMPTS = 3
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError, asyncpg.UniqueViolationError)
_MAX_QUERY_WORDS = 64
# Matches ranked per keyword-search stage; bounds the cost of queries made of very common words.
_KEYWORD_CANDIDATES = 100
# Chunks read per keyword search to find those whose text is the query.
_EXACT_LIMIT = 32
_HIT_COLUMNS = (
    "n.bank_id, n.memory_id, n.chunk_index, n.text, n.score, m.tags, m.metadata, "
    "m.occurred_at, m.retained_at, m.source"
)


class PostgresStoreConfig(BaseModel):
    """``store_config`` for ``store: postgres``."""

    model_config = ConfigDict(extra="forbid")

    dsn: str = Field(min_length=1)
    min_pool_size: int = Field(default=1, ge=0)
    max_pool_size: int = Field(default=10, ge=1)
    schema_name: str = Field(default="astrocyte", alias="schema")
    command_timeout: float = Field(default=30.0, gt=0)
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _pool_bounds(self) -> PostgresStoreConfig:
        if self.min_pool_size > self.max_pool_size:
            raise ValueError("min_pool_size must not exceed max_pool_size")
        schema_mod.quote_schema(self.schema_name)
        return self


def parse_config(mapping: Mapping[str, Any]) -> PostgresStoreConfig:
    """Validate ``store_config``; errors name the key and never echo values (the DSN holds secrets)."""
    return validate_model(PostgresStoreConfig, mapping)


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL and key=value forms)."""
    dsn = re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresStore:
    """A :class:`~astrocyte.providers.Store` on PostgreSQL with pgvector, built from ``store_config``."""

    name = "postgres"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = parse_config(config)
        self._schema = self._config.schema_name
        self._pool: asyncpg.Pool | None = None
        self._dims: int | None = None
        self._dims_lock = asyncio.Lock()
        self._ext_schema = "public"
        self._keyed_ready = False  # memory_keys exists (created on the first keyed call)

    @classmethod
    def validate_config(cls, mapping: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming unknown or ill-typed keys."""
        parse_config(mapping)

    @classmethod
    def contract_config(cls, tmp_path: Path) -> Mapping[str, Any] | None:
        """The contract kit's config: the test server from ``ASTROCYTE_TEST_POSTGRES_DSN`` and a
        schema of its own, or None when no server is configured (see astrocyte.testing)."""
        dsn = os.environ.get("ASTROCYTE_TEST_POSTGRES_DSN")
        if not dsn:
            return None
        return {"dsn": dsn, "schema": f"astrocyte_contract_{uuid.uuid4().hex[:12]}"}

    @classmethod
    async def contract_cleanup(cls, config: Mapping[str, Any]) -> None:
        """Drop the schema :meth:`contract_config` made up."""
        conn = await asyncpg.connect(config["dsn"])
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {_quote_ident(config['schema'])} CASCADE")
        finally:
            await conn.close()

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Migrate the schema (idempotent, safe across replicas) and open the connection pool."""
        if self._pool is not None:
            return
        cfg = self._config
        version, pgvector_version = await self._prepare_schema()
        try:
            self._pool = await asyncpg.create_pool(
                cfg.dsn,
                min_size=cfg.min_pool_size,
                max_size=cfg.max_pool_size,
                command_timeout=cfg.command_timeout,
                server_settings=self._server_settings(pgvector_version),
                init=self._init_connection,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise self._unavailable(exc) from exc
        logger.info(
            "postgres store open: %s schema=%s version=%d pgvector=%s",
            redact_dsn(cfg.dsn),
            self._schema,
            version,
            ".".join(map(str, pgvector_version)),
        )

    async def _prepare_schema(self) -> tuple[int, tuple[int, ...]]:
        """Migrate on a connection of its own; learn pgvector's schema and version and the stored
        embedding size. Returns the schema version and pgvector's version."""
        cfg = self._config
        try:
            conn = await asyncpg.connect(
                cfg.dsn, timeout=cfg.command_timeout, command_timeout=cfg.command_timeout
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise self._unavailable(exc) from exc
        try:
            version = await schema_mod.migrate(conn, self._schema)
            self._ext_schema = str(
                await conn.fetchval(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'vector'"
                )
            )
            dims = await conn.fetchval(
                f"SELECT value FROM {schema_mod.quote_schema(self._schema)}.meta WHERE key = $1",
                schema_mod.DIMENSIONS_KEY,
            )
            self._dims = int(dims) if dims is not None else None
            return version, await schema_mod.extension_version(conn)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise self._unavailable(exc) from exc
        finally:
            await conn.close()

    def _server_settings(self, pgvector_version: tuple[int, ...]) -> dict[str, str]:
        settings = {
            "search_path": f"{schema_mod.quote_schema(self._schema)}, {_quote_ident(self._ext_schema)}",
            "hnsw.ef_search": str(self._config.hnsw_ef_search),
            # Filter-dependent plans (HNSW vs. filter index) must be re-planned per query.
            "plan_cache_mode": "force_custom_plan",
            "jit": "off",
        }
        if pgvector_version >= (0, 8):
            # Filtered searches keep walking the graph until k rows pass (pgvector 0.8+).
            settings["hnsw.iterative_scan"] = "relaxed_order"
        return settings

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except _UNAVAILABLE:  # TimeoutError is an OSError
            pool.terminate()

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        await register_vector(conn, schema=self._ext_schema)
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    def _unavailable(self, exc: BaseException) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"postgres store unavailable ({_describe(exc)}); check that the database is reachable"
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver errors leave as Astrocyte errors, never raw asyncpg ones."""
        if self._pool is None:
            raise ProviderUnavailableError("postgres store is not open; call open() first")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except AstrocyteError:
            raise
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        except asyncpg.DataError as exc:
            raise ValidationError(
                f"the database rejected a value: {exc}", code="store_rejected_value"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise AstrocyteError(f"postgres store error: {_describe(exc)}", code="store_error") from exc

    # -- banks -----------------------------------------------------------------------------------

    async def create_bank(self, bank_id: str) -> bool:
        async with self._connection() as conn:
            created = await conn.fetchval(
                "INSERT INTO banks (bank_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", bank_id
            )
        return bool(created)

    async def bank_exists(self, bank_id: str) -> bool:
        async with self._connection() as conn:
            return bool(await conn.fetchval("SELECT true FROM banks WHERE bank_id = $1", bank_id))

    async def list_banks(self) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT bank_id FROM banks ORDER BY bank_id")
        return [row["bank_id"] for row in rows]

    async def delete_bank(self, bank_id: str) -> int:
        async with self._connection() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "WITH d AS (DELETE FROM memories WHERE bank_id = $1 RETURNING 1) SELECT count(*) FROM d",
                bank_id,
            )
            await conn.execute("DELETE FROM banks WHERE bank_id = $1", bank_id)
        return int(deleted)

    async def bank_stats(self, bank_id: str) -> BankStats:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM memories WHERE bank_id = b.bank_id) AS memories, "
                "(SELECT count(*) FROM chunks WHERE bank_id = b.bank_id) AS chunks, "
                "(SELECT min(retained_at) FROM memories WHERE bank_id = b.bank_id) AS oldest, "
                "(SELECT max(retained_at) FROM memories WHERE bank_id = b.bank_id) AS newest "
                "FROM banks b WHERE b.bank_id = $1",
                bank_id,
            )
        if row is None:
            raise NotFoundError(f"bank {bank_id!r} does not exist", code="bank_not_found")
        return BankStats(bank_id, int(row["memories"]), int(row["chunks"]), row["oldest"], row["newest"])

    # -- writes ----------------------------------------------------------------------------------

    async def insert(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """Write records atomically (one transaction), one memory per ``(bank_id, idempotency_key)``."""
        if not records:
            return []
        await self._check_dimensions(records)
        async with self._connection() as conn:
            for attempt in range(_INSERT_ATTEMPTS):
                try:
                    async with conn.transaction():
                        return await _write_records(conn, records)
                except _RETRYABLE:
                    # Concurrent batches touching the same keys in another order, or sending the
                    # same record (its chunks' key) at once; the retry sees the other writer's
                    # rows and resolves them as duplicates.
                    if attempt == _INSERT_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    async def upsert_keyed(self, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
        """One memory per ``(bank_id, memory_key)``, replaced in one transaction (see the protocol)."""
        if not records:
            return []
        await self._check_dimensions(records)
        async with self._connection() as conn:
            await self._ensure_keyed(conn)
            for attempt in range(_INSERT_ATTEMPTS):
                try:
                    async with conn.transaction():
                        return await keyed.upsert_keyed(conn, self._schema, records, _write_records)
                except _RETRYABLE:
                    if attempt == _INSERT_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")

    async def forget_keys(self, bank_id: str, memory_keys: Sequence[str]) -> int:
        """Delete the memories held under ``memory_keys``; returns how many went."""
        if not memory_keys:
            return 0
        async with self._connection() as conn:
            await self._ensure_keyed(conn)
            return await keyed.forget_keys(conn, bank_id, memory_keys)

    async def _ensure_keyed(self, conn: asyncpg.Connection) -> None:
        if not self._keyed_ready:
            await keyed.ensure_table(conn, self._schema)
            self._keyed_ready = True

    async def _check_dimensions(self, records: Sequence[MemoryRecord]) -> None:
        """Settle a fresh schema's embedding size from the batch, or refuse a batch of another size."""
        dims = _batch_dimensions(records)
        if dims is not None and self._dims is None:
            await self._settle_dimensions(dims)
        if dims is not None and self._dims is not None and dims != self._dims:
            raise _dimension_mismatch(dims, self._dims)

    async def _settle_dimensions(self, dims: int) -> None:
        """Fix the embedding size of a fresh schema in a short transaction of its own, before any
        row is written. Fixing it inside the first batch's transaction held the schema's lock for
        the whole batch, so every concurrent first batch (of every replica) queued behind it."""
        async with self._dims_lock:  # one round trip per process, not one per waiting batch
            if self._dims is not None:
                return
            async with self._connection() as conn:
                async with conn.transaction():
                    fixed = await schema_mod.fix_dimensions(
                        conn, self._schema, dims, self._config.hnsw_m, self._config.hnsw_ef_construction
                    )
            self._dims = fixed  # only once committed

    async def find_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The memory id holding each ``(bank_id, idempotency_key)`` of ``keys`` that is stored."""
        if not keys:
            return {}
        async with self._connection() as conn:
            return await _held_keys(conn, keys)

    async def forget(self, bank_id: str, selector: ForgetSelector) -> int:
        """Delete memories matching every given selector (AND); returns how many memories went."""
        selector.check()
        clauses: list[str] = ["bank_id = $1"]
        args: list[Any] = [bank_id]
        if selector.memory_ids:
            args.append(list(selector.memory_ids))
            clauses.append(f"memory_id = ANY(${len(args)}::text[])")
        if selector.tags:
            args.append(list(selector.tags))
            clauses.append(f"tags @> ${len(args)}::text[]")
        if selector.before is not None:
            args.append(selector.before)
            clauses.append(f"retained_at < ${len(args)}")
        sql = f"WITH d AS (DELETE FROM memories WHERE {' AND '.join(clauses)} RETURNING 1) SELECT count(*) FROM d"
        async with self._connection() as conn:
            return int(await conn.fetchval(sql, *args))

    # -- reads -----------------------------------------------------------------------------------

    async def vector_search(
        self, bank_ids: Sequence[str], embedding: np.ndarray, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by cosine similarity, best first; exact when the index falls short."""
        if k <= 0 or not bank_ids:
            return []
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if self._dims is None:
            self._dims = await self._stored_dimensions()
            if self._dims is None:
                return []
        if vector.shape[0] != self._dims:
            raise _dimension_mismatch(int(vector.shape[0]), self._dims)
        where, args = _filter_sql("c", bank_ids, filters, [vector, k])
        ann = _vector_sql(where)
        async with self._connection() as conn:
            rows = await conn.fetch(ann, *args)
            if len(rows) < k:
                # The index ran out of candidates before enough passed the filters: rank the
                # filtered rows exactly. ``+ 0`` keeps the planner from using the HNSW index here.
                exact = ann.replace("ORDER BY c.embedding <=> $1", "ORDER BY (c.embedding <=> $1) + 0")
                rows = await conn.fetch(exact, *args)
        return [_hit(row) for row in rows]

    async def keyword_search(
        self, bank_ids: Sequence[str], query: str, k: int, filters: SearchFilters
    ) -> list[StoredHit]:
        """Up to ``k`` chunks by full-text relevance, best first.

        Chunks containing every query word (after stemming and stop words) rank first, scored
        ``1 + r``; when there are fewer than ``k`` of them, chunks containing any word follow,
        scored ``r`` (``r`` is ``ts_rank_cd`` normalised into [0, 1)). Each stage ranks at most
        ``max(4 * k, _KEYWORD_CANDIDATES)`` matches, so a query of very common words stays cheap.
        """
        words = _query_words(query)
        if k <= 0 or not bank_ids or not words:
            return []
        cap = max(_KEYWORD_CANDIDATES, 4 * k)
        where, args = _filter_sql("c", bank_ids, filters, [" ".join(words), " or ".join(words), k, cap])
        key = text_key(query)
        async with self._connection() as conn:
            rows = await conn.fetch(_keyword_sql(where), *args)
            exact = await _exact_text(conn, bank_ids, filters, key) if key else []
        hits = [_hit(row) for row in rows]
        if not exact:
            return hits
        # A chunk whose text is the query comes first, scored as the best hit.
        top = max([hit.score for hit in hits], default=1.0)
        held = {(hit.memory_id, hit.chunk_index) for hit in exact}
        rest = [hit for hit in hits if (hit.memory_id, hit.chunk_index) not in held]
        return ([dataclasses.replace(hit, score=top) for hit in exact] + rest)[: max(k, len(exact))]

    async def count(self, bank_ids: Sequence[str], filters: SearchFilters) -> int:
        """How many memories (not chunks) in ``bank_ids`` match the filters."""
        if not bank_ids:
            return 0
        where, args = _filter_sql("m", bank_ids, filters, [])
        async with self._connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM memories m WHERE {where}", *args))

    async def _stored_dimensions(self) -> int | None:
        async with self._connection() as conn:
            raw = await conn.fetchval("SELECT value FROM meta WHERE key = $1", schema_mod.DIMENSIONS_KEY)
        return int(raw) if raw is not None else None

    # -- state and leases ------------------------------------------------------------------------

    async def get_state(self, namespace: str, key: str) -> str | None:
        async with self._connection() as conn:
            value = await conn.fetchval(
                "SELECT value FROM state WHERE namespace = $1 AND key = $2", namespace, key
            )
        return None if value is None else str(value)

    async def set_state(self, namespace: str, key: str, value: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO state (namespace, key, value) VALUES ($1, $2, $3) ON CONFLICT (namespace, key) "
                "DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                namespace,
                key,
                value,
            )

    async def try_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take the lease when free or expired, or renew it when ``holder`` already has it."""
        async with self._connection() as conn:
            won = await conn.fetchval(
                "INSERT INTO leases (name, holder, expires_at) "
                "VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) "
                "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
                "WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= clock_timestamp() "
                "RETURNING true",
                name,
                holder,
                float(ttl_seconds),
            )
        return bool(won)

    async def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``name`` when ``holder`` holds it; True when it did (and it had not expired)."""
        async with self._connection() as conn:
            live = await conn.fetchval(
                "DELETE FROM leases WHERE name = $1 AND holder = $2 RETURNING expires_at > clock_timestamp()",
                name,
                holder,
            )
        return bool(live)

    # -- health ----------------------------------------------------------------------------------

    async def health(self) -> ComponentHealth:
        """``SELECT 1`` round trip; a down database reports unhealthy instead of raising."""
        if self._pool is None:
            return ComponentHealth("store", False, detail="postgres: store is not open")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(min(self._config.command_timeout, 5.0)):
                async with self._pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            return ComponentHealth("store", False, detail=f"postgres: database unreachable: {_describe(exc)}")
        latency = (time.perf_counter() - started) * 1000
        return ComponentHealth(
            "store", True, detail=f"postgres schema {self._schema}", latency_ms=round(latency, 3)
        )


# -- helpers ---------------------------------------------------------------------------------------


def _dimension_mismatch(got: int, expected: int) -> ValidationError:
    return ValidationError(
        f"embedding has {got} dimensions but this store holds {expected}-dimensional vectors; "
        "use the embedder the store was filled with, or a new schema",
        code="embedding_dimension_mismatch",
        details={"got": got, "expected": expected},
    )


def _batch_dimensions(records: Sequence[MemoryRecord]) -> int | None:
    sizes = {int(np.asarray(c.embedding).reshape(-1).shape[0]) for r in records for c in r.chunks}
    if len(sizes) > 1:
        low, high = min(sizes), max(sizes)
        raise ValidationError(
            f"embeddings in one batch differ in size ({low} vs {high})",
            code="embedding_dimension_mismatch",
            details={"got": sorted(sizes)},
        )
    return sizes.pop() if sizes else None


def _filter_sql(
    alias: str, bank_ids: Sequence[str], filters: SearchFilters, args: list[Any]
) -> tuple[str, list[Any]]:
    """WHERE clauses for banks, tags (all required) and time range on ``event_at``; returns them
    with ``args`` extended by their parameters (numbered after the ones already there)."""
    args = [*args, list(bank_ids)]
    clauses = [f"{alias}.bank_id = ANY(${len(args)}::text[])"]
    if filters.tags:
        args.append(sorted(set(filters.tags)))
        clauses.append(f"{alias}.tags @> ${len(args)}::text[]")
    if filters.start is not None:
        args.append(filters.start)
        clauses.append(f"{alias}.event_at >= ${len(args)}")
    if filters.end is not None:
        args.append(filters.end)
        clauses.append(f"{alias}.event_at < ${len(args)}")
    return " AND ".join(clauses), args


def _query_words(query: str) -> list[str]:
    """Plain words only, so no user input can form tsquery syntax; OR-ed together for recall."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", query):
        lowered = word.lower()
        if lowered != "or" and lowered not in seen:
            seen[lowered] = None
    return list(seen)[:_MAX_QUERY_WORDS]


def _hit(row: asyncpg.Record) -> StoredHit:
    metadata = row["metadata"]
    score = float(row["score"])
    return StoredHit(
        memory_id=row["memory_id"],
        bank_id=row["bank_id"],
        chunk_index=row["chunk_index"],
        text=row["text"],
        # pgvector's cosine distance to a zero vector is NaN; such a vector is similar to nothing.
        score=score if math.isfinite(score) else 0.0,
        tags=tuple(row["tags"]),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        occurred_at=row["occurred_at"],
        retained_at=row["retained_at"],
        source=row["source"],
    )


async def _exact_text(
    conn: asyncpg.Connection, bank_ids: Sequence[str], filters: SearchFilters, key: str
) -> list[StoredHit]:
    """Chunks whose text is ``key`` word for word (:func:`~astrocyte.fusion.text_key`), among
    those holding it as a phrase: any :data:`_EXACT_LIMIT` of them, then, when that many came back
    without the text itself (a phrase many longer chunks hold), the shortest holding it."""
    where, args = _filter_sql("c", bank_ids, filters, [key, _EXACT_LIMIT])
    sql = (
        "WITH n AS MATERIALIZED (SELECT c.bank_id, c.memory_id, c.chunk_index, c.text, 0::float8 AS score "
        f"FROM chunks c WHERE c.tsv @@ phraseto_tsquery('{schema_mod.TEXT_SEARCH_CONFIG}', $1) AND {where} "
        "{order} LIMIT $2) "
        f"SELECT {_HIT_COLUMNS} FROM n JOIN memories m USING (bank_id, memory_id) "
        "ORDER BY n.bank_id, n.memory_id, n.chunk_index"
    )
    rows = await conn.fetch(sql.replace("{order}", ""), *args)
    exact = [_hit(row) for row in rows if text_key(row["text"]) == key]
    if exact or len(rows) < _EXACT_LIMIT:
        return exact
    rows = await conn.fetch(sql.replace("{order}", "ORDER BY length(c.text)"), *args)
    return [_hit(row) for row in rows if text_key(row["text"]) == key]


def _vector_sql(where: str) -> str:
    """Parameters: $1 the query vector, $2 k, then the filter parameters used by ``where``. The
    HNSW walk's ``k`` nearest, with any chunk whose vector is the query's (found through the
    identity index, migration 3) added: approximation never hides an identical vector."""
    chunk = "c.bank_id, c.memory_id, c.chunk_index, c.text, 1 - (c.embedding <=> $1) AS score"
    return (
        f"WITH same AS MATERIALIZED (SELECT {chunk} FROM chunks c WHERE {where} "
        "AND hashtextextended(c.embedding::text, 0) = hashtextextended($1::vector::text, 0) "
        "AND c.embedding = $1 LIMIT $2), "
        f"ann AS MATERIALIZED (SELECT {chunk} FROM chunks c WHERE {where} "
        "ORDER BY c.embedding <=> $1 LIMIT $2), "
        "n AS (SELECT * FROM same UNION SELECT * FROM ann ORDER BY score DESC, bank_id, memory_id, "
        "chunk_index LIMIT $2) "
        f"SELECT {_HIT_COLUMNS} FROM n JOIN memories m USING (bank_id, memory_id) "
        "ORDER BY n.score DESC, n.bank_id, n.memory_id, n.chunk_index"
    )


def _keyword_sql(where: str) -> str:
    """Parameters: $1 words (AND), $2 words joined by ``or``, $3 k, $4 candidates per stage, then
    the filter parameters used by ``where``."""
    # The tsqueries stay inline (not in a CTE) so the planner sees them as constants and can use
    # the column statistics: common words then scan until the LIMIT, rare ones use the GIN index.
    every = f"websearch_to_tsquery('{schema_mod.TEXT_SEARCH_CONFIG}', $1)"
    some = f"websearch_to_tsquery('{schema_mod.TEXT_SEARCH_CONFIG}', $2)"
    return f"""
WITH strict AS MATERIALIZED (
    SELECT c.bank_id, c.memory_id, c.chunk_index, c.text, c.tsv, 1 AS stage FROM chunks c
    WHERE c.tsv @@ {every} AND {where} LIMIT $4),
loose AS MATERIALIZED (
    SELECT c.bank_id, c.memory_id, c.chunk_index, c.text, c.tsv, 0 AS stage FROM chunks c
    WHERE (SELECT count(*) FROM strict) < $3 AND c.tsv @@ {some} AND NOT c.tsv @@ {every} AND {where}
    LIMIT $4),
n AS MATERIALIZED (
    SELECT x.bank_id, x.memory_id, x.chunk_index, x.text, x.stage + ts_rank_cd(x.tsv, {some}, 32) AS score
    FROM (SELECT * FROM strict UNION ALL SELECT * FROM loose) AS x
    ORDER BY score DESC, x.bank_id, x.memory_id, x.chunk_index LIMIT $3)
SELECT {_HIT_COLUMNS} FROM n JOIN memories m USING (bank_id, memory_id)
ORDER BY n.score DESC, n.bank_id, n.memory_id, n.chunk_index
"""


_INSERT_MEMORIES = """
INSERT INTO memories (bank_id, memory_id, text, tags, metadata, occurred_at, retained_at, source, idempotency_key)
SELECT u.bank_id, u.memory_id, u.text, ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb)),
       u.metadata::jsonb, u.occurred_at, u.retained_at, u.source, u.idempotency_key
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::text[], $9::text[])
     AS u(bank_id, memory_id, text, tags, metadata, occurred_at, retained_at, source, idempotency_key)
ON CONFLICT DO NOTHING
RETURNING bank_id, memory_id
"""

_INSERT_CHUNK = """
INSERT INTO chunks (bank_id, memory_id, chunk_index, text, tags, event_at, embedding)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def _write_records(conn: asyncpg.Connection, records: Sequence[MemoryRecord]) -> list[InsertOutcome]:
    """Insert inside the caller's transaction and resolve every record to the memory holding it:
    a record is a duplicate when its idempotency key or its memory id is held (stored before, by
    a concurrent writer, or by an earlier record of the batch).

    The chunks (the expensive part: HNSW and full-text index entries) go in first, then the
    memory rows, then the transaction ends. A batch that meets a key which another, uncommitted
    batch holds waits for that batch's transaction to end; with the memory rows written last, it
    waits only for the other's last statements, never for its index work (with the memory rows
    written first, 8 concurrent batches sharing keys queued one behind another). The chunks'
    foreign key is checked at commit (``DEFERRABLE INITIALLY DEFERRED``, migration 2), and the
    chunks of records that lost their key in the meantime are deleted before it."""
    first_by_key, fresh = _first_of_each(records)
    winners = await _held_before(conn, fresh)
    fresh = [r for r in fresh if (r.bank_id, r.memory_id) not in winners.held_ids]
    fresh = [
        r for r in fresh if r.idempotency_key is None or (r.bank_id, r.idempotency_key) not in winners.keys
    ]
    # A stable order makes concurrent batches lock keys in the same order (no deadlocks).
    fresh.sort(key=lambda r: (r.bank_id, r.idempotency_key or "", r.memory_id))
    await _insert_chunks(conn, fresh)
    await conn.execute(
        "INSERT INTO banks (bank_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        sorted({r.bank_id for r in fresh}),
    )
    rows = await conn.fetch(_INSERT_MEMORIES, *_memory_columns(fresh)) if fresh else []
    inserted = {(row["bank_id"], row["memory_id"]) for row in rows}
    losers = [r for r in fresh if (r.bank_id, r.memory_id) not in inserted]
    if losers:
        await conn.execute(
            "DELETE FROM chunks c USING unnest($1::text[], $2::text[]) AS u(bank_id, memory_id) "
            "WHERE c.bank_id = u.bank_id AND c.memory_id = u.memory_id",
            [r.bank_id for r in losers],
            [r.memory_id for r in losers],
        )
    return _outcomes(records, first_by_key, inserted, {**winners.keys, **await _existing_ids(conn, losers)})


async def _insert_chunks(conn: asyncpg.Connection, records: Sequence[MemoryRecord]) -> None:
    rows = [
        (r.bank_id, r.memory_id, c.index, c.text, list(r.tags), r.occurred_at or r.retained_at, c.embedding)
        for r in records
        for c in r.chunks
    ]
    if rows:
        await conn.executemany(_INSERT_CHUNK, rows)


@dataclasses.dataclass(frozen=True)
class _Held:
    """What a batch finds already committed before it writes anything."""

    keys: dict[tuple[str, str], str]  # (bank_id, idempotency_key) -> the memory id holding it
    held_ids: set[tuple[str, str]]  # (bank_id, memory_id) already stored


def _first_of_each(records: Sequence[MemoryRecord]) -> tuple[dict[tuple[str, str], int], list[MemoryRecord]]:
    """The first record of each idempotency key and memory id in the batch (by position), and
    those records; later repeats are answered as duplicates of the first."""
    first_by_key: dict[tuple[str, str], int] = {}
    seen_ids: set[tuple[str, str]] = set()
    fresh: list[MemoryRecord] = []
    for index, record in enumerate(records):
        scoped_id = (record.bank_id, record.memory_id)
        if scoped_id in seen_ids:
            continue
        if record.idempotency_key is not None:
            slot = (record.bank_id, record.idempotency_key)
            if slot in first_by_key:
                continue
            first_by_key[slot] = index
        seen_ids.add(scoped_id)
        fresh.append(record)
    return first_by_key, fresh


async def _held_before(conn: asyncpg.Connection, records: Sequence[MemoryRecord]) -> _Held:
    """Keys and memory ids of ``records`` that committed memories hold (read without waiting):
    those records write no chunks. Memory ids matter for a record sent again as it was."""
    keys = [(r.bank_id, key) for r in records if (key := r.idempotency_key) is not None]
    held_keys = await _held_keys(conn, keys) if keys else {}
    rows = await conn.fetch(
        "SELECT m.bank_id, m.memory_id FROM memories m JOIN unnest($1::text[], $2::text[]) "
        "AS u(bank_id, memory_id) ON m.bank_id = u.bank_id AND m.memory_id = u.memory_id",
        [r.bank_id for r in records],
        [r.memory_id for r in records],
    )
    return _Held(held_keys, {(row["bank_id"], row["memory_id"]) for row in rows})


def _outcomes(
    records: Sequence[MemoryRecord],
    first_by_key: dict[tuple[str, str], int],
    inserted: set[tuple[str, str]],
    winners: dict[tuple[str, str], str],
) -> list[InsertOutcome]:
    outcomes: list[InsertOutcome] = []
    answered: set[tuple[str, str]] = set()
    for record in records:
        scoped_id = (record.bank_id, record.memory_id)
        slot = (record.bank_id, record.idempotency_key) if record.idempotency_key is not None else None
        if slot is not None and slot in winners:  # stored before, or by a concurrent writer
            outcomes.append(InsertOutcome(winners[slot], True))
        elif slot is not None and slot in first_by_key and records[first_by_key[slot]] is not record:
            outcomes.append(InsertOutcome(records[first_by_key[slot]].memory_id, True))  # a repeat
        else:  # new, or a memory id already held
            outcomes.append(
                InsertOutcome(record.memory_id, scoped_id not in inserted or scoped_id in answered)
            )
        answered.add(scoped_id)
    return outcomes


def _memory_columns(records: Sequence[MemoryRecord]) -> list[list[Any]]:
    return [
        [r.bank_id for r in records],
        [r.memory_id for r in records],
        [r.text for r in records],
        [json.dumps(list(r.tags)) for r in records],
        [json.dumps(r.metadata) for r in records],
        [r.occurred_at for r in records],
        [r.retained_at for r in records],
        [r.source for r in records],
        [r.idempotency_key for r in records],
    ]


async def _existing_ids(
    conn: asyncpg.Connection, losers: Sequence[MemoryRecord]
) -> dict[tuple[str, str], str]:
    """For records that lost to an earlier or concurrent writer, the memory id that won their key."""
    keyed = {(r.bank_id, key): r for r in losers if (key := r.idempotency_key) is not None}
    if not keyed:
        return {}
    found = await _held_keys(conn, list(keyed))
    missing = [record for slot, record in keyed.items() if slot not in found]
    if missing and not await _ids_held(conn, missing):
        # The conflicting row was deleted between our insert and this read: let the caller retry.
        raise ConflictError(
            "a memory with this idempotency key was deleted while writing; retry the request",
            code="idempotency_race",
        )
    return found


async def _held_keys(conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``(bank_id, idempotency_key) -> memory_id`` for those of ``keys`` that are stored."""
    rows = await conn.fetch(
        "SELECT m.bank_id, m.idempotency_key, m.memory_id FROM memories m "
        "JOIN unnest($1::text[], $2::text[]) AS u(bank_id, idempotency_key) "
        "ON m.bank_id = u.bank_id AND m.idempotency_key = u.idempotency_key",
        [bank for bank, _ in keys],
        [key for _, key in keys],
    )
    return {(row["bank_id"], row["idempotency_key"]): row["memory_id"] for row in rows}


async def _ids_held(conn: asyncpg.Connection, records: Sequence[MemoryRecord]) -> bool:
    """Whether every one of ``records`` lost on its memory id (held already), not on its key."""
    held = await conn.fetchval(
        "SELECT count(*) FROM memories m JOIN unnest($1::text[], $2::text[]) AS u(bank_id, memory_id) "
        "ON m.bank_id = u.bank_id AND m.memory_id = u.memory_id",
        [r.bank_id for r in records],
        [r.memory_id for r in records],
    )
    return int(held) == len(records)
