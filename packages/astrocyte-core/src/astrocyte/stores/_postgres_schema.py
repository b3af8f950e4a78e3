"""DDL and migrations for :mod:`astrocyte.stores.postgres`.

Everything lives in one schema (``astrocyte`` by default). Migrations are numbered and applied in
order inside one transaction holding an advisory lock, so several gateway replicas starting at once
serialise instead of racing on ``CREATE``. The embedding column starts untyped: its dimension is
only known at the first insert, which then fixes ``vector(N)``, records ``N`` in ``meta`` and builds
the HNSW index (instant on an empty table), in a short transaction of its own before its rows are
written, so concurrent first batches wait for that step only, not for each other's writes.
"""

from __future__ import annotations

import logging
import re
import zlib

import asyncpg  # type: ignore[import-untyped]

from astrocyte.errors import ConfigError, ProviderUnavailableError

logger = logging.getLogger("astrocyte.stores.postgres")

# pgvector cannot build an HNSW index on ``vector`` columns wider than this.
HNSW_MAX_DIMENSIONS = 2000
TEXT_SEARCH_CONFIG = "english"
DIMENSIONS_KEY = "embedding_dimensions"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS meta (
        key text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE IF NOT EXISTS banks (
        bank_id text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS memories (
        bank_id text NOT NULL REFERENCES banks (bank_id) ON DELETE CASCADE,
        memory_id text NOT NULL,
        text text NOT NULL,
        tags text[] NOT NULL DEFAULT '{{}}',
        metadata jsonb NOT NULL DEFAULT '{{}}',
        occurred_at timestamptz,
        retained_at timestamptz NOT NULL,
        event_at timestamptz GENERATED ALWAYS AS (COALESCE(occurred_at, retained_at)) STORED,
        source text,
        idempotency_key text,
        PRIMARY KEY (bank_id, memory_id),
        UNIQUE (bank_id, idempotency_key)
    );
    CREATE INDEX IF NOT EXISTS memories_bank_retained ON memories (bank_id, retained_at);
    CREATE INDEX IF NOT EXISTS memories_bank_event ON memories (bank_id, event_at);
    -- bank_id, tags and event_at are copied onto chunks so filtered searches never need a join.
    CREATE TABLE IF NOT EXISTS chunks (
        bank_id text NOT NULL,
        memory_id text NOT NULL,
        chunk_index integer NOT NULL,
        text text NOT NULL,
        tags text[] NOT NULL DEFAULT '{{}}',
        event_at timestamptz NOT NULL,
        embedding vector NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, text)) STORED,
        PRIMARY KEY (bank_id, memory_id, chunk_index),
        FOREIGN KEY (bank_id, memory_id) REFERENCES memories (bank_id, memory_id) ON DELETE CASCADE
    );
    -- Vectors live out of line (TOAST) so the heap stays narrow: filter and keyword scans read a
    -- few pages instead of one 1.5 kB vector per row. HNSW keeps its own copy for searching.
    ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE EXTERNAL;
    ALTER TABLE chunks SET (toast_tuple_target = 128);
    CREATE INDEX IF NOT EXISTS chunks_bank_event ON chunks (bank_id, event_at);
    -- No GIN pending list: it would make every search right after a bulk load scan it linearly.
    CREATE INDEX IF NOT EXISTS chunks_tags ON chunks USING gin (tags) WITH (fastupdate = off);
    CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin (tsv) WITH (fastupdate = off);
    CREATE TABLE IF NOT EXISTS state (
        namespace text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, key)
    );
    CREATE TABLE IF NOT EXISTS leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """,
    # 2: a batch writes its chunks before its memory rows, so that a concurrent batch meeting one
    # of its keys waits only for its last statements (see postgres._write_records); the chunks'
    # reference to their memory is therefore checked at commit. ON DELETE CASCADE stays immediate.
    """
    ALTER TABLE chunks ALTER CONSTRAINT chunks_bank_id_memory_id_fkey DEFERRABLE INITIALLY DEFERRED;
    """,
    # 3: chunks by the hash of their vector, so a vector search finds a stored vector identical
    # to the query even when the HNSW walk passes it by (the "exact match first" rule). A hash,
    # not the vector: a btree cannot hold vectors of more than ~670 dimensions.
    """
    CREATE INDEX IF NOT EXISTS chunks_embedding_identity
        ON chunks (bank_id, hashtextextended(embedding::text, 0));
    """,
)


def quote_schema(schema: str) -> str:
    """The schema name as a safe SQL identifier (validated, then double-quoted)."""
    if not _IDENTIFIER.match(schema):
        raise ConfigError(
            f"postgres schema {schema!r} is invalid: use 1-63 lowercase letters, digits or '_', "
            "not starting with a digit",
            code="config_invalid",
        )
    return f'"{schema}"'


def lock_key(schema: str, purpose: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``purpose`` in ``schema``."""
    digest = zlib.crc32(f"astrocyte:{schema}:{purpose}".encode())
    return digest - (1 << 31)


async def migrate(conn: asyncpg.Connection, schema: str) -> int:
    """Create or upgrade the schema; safe to run from many processes at once. Returns the version."""
    quoted = quote_schema(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "migrate"))
        await _ensure_extension(conn)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        await conn.execute(f"SET LOCAL search_path = {quoted}, {await extension_schema(conn)}")
        await conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
        raw = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        version = int(raw or 0)
        for number, ddl in enumerate(MIGRATIONS, start=1):
            if number > version:
                await conn.execute(ddl)
                logger.info("postgres store: applied migration %d to schema %s", number, schema)
        if version < len(MIGRATIONS):
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                str(len(MIGRATIONS)),
            )
        return max(version, len(MIGRATIONS))


async def _ensure_extension(conn: asyncpg.Connection) -> None:
    installed = await conn.fetchval("SELECT true FROM pg_extension WHERE extname = 'vector'")
    if installed:
        return
    # Stores in other schemas of the same database may be creating it at this very moment.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("*", "extension"))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ProviderUnavailableError(
            "the pgvector extension is not installed and this role may not create it; "
            "ask a database superuser to run CREATE EXTENSION vector",
            code="store_extension_missing",
        ) from exc
    except asyncpg.UndefinedFileError as exc:
        raise ProviderUnavailableError(
            "the PostgreSQL server has no pgvector extension available; install pgvector on it",
            code="store_extension_missing",
        ) from exc


async def extension_schema(conn: asyncpg.Connection) -> str:
    """The quoted schema holding pgvector's type and operators (normally ``public``)."""
    name = await conn.fetchval(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    )
    return str(name or "public")


async def extension_version(conn: asyncpg.Connection) -> tuple[int, ...]:
    raw = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    return tuple(int(part) for part in re.findall(r"\d+", str(raw or "0")))


async def fix_dimensions(
    conn: asyncpg.Connection, schema: str, dimensions: int, hnsw_m: int, hnsw_ef_construction: int
) -> int:
    """Record the embedding size on first use and type the column to match; returns the size in
    force (the earlier one when another writer fixed it first). Runs inside the caller's
    transaction, which must have ``search_path`` set to the store schema and should hold nothing
    else: the advisory lock and the ``ALTER TABLE`` lock last until it commits."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "dimensions"))
    current = await conn.fetchval("SELECT value FROM meta WHERE key = $1", DIMENSIONS_KEY)
    if current is not None:
        return int(current)
    await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2)", DIMENSIONS_KEY, str(dimensions))
    await conn.execute(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({int(dimensions)})")
    if dimensions <= HNSW_MAX_DIMENSIONS:
        await conn.execute(
            "CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON chunks "
            f"USING hnsw (embedding vector_cosine_ops) WITH (m = {int(hnsw_m)}, "
            f"ef_construction = {int(hnsw_ef_construction)})"
        )
    else:
        logger.warning(
            "postgres store: %d-dimensional embeddings exceed pgvector's HNSW limit of %d; "
            "vector search will scan exactly (slower on large banks)",
            dimensions,
            HNSW_MAX_DIMENSIONS,
        )
    return dimensions
