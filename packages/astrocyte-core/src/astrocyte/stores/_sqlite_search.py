"""The SQLite store's read path, run on a reader thread: the vector arm (ANN candidates re-read and
re-scored exactly), the keyword arm (FTS5 BM25), and hydration of chunk ids into hits.

Each arm first ranks bare ``(chunk id, score)`` pairs; rows are read in full only for the pairs
kept, in one statement (``hydrate``), so a recall that runs both arms (``both_arms``) pays one
statement for the hits of both, and none for rows it has parsed before (``HitRows``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, overload

import numpy as np

from astrocyte.fusion import text_key
from astrocyte.stores._sqlite_sql import bank_key, filter_sql, has_filters
from astrocyte.stores._vector_index import VectorIndex
from astrocyte.types import SearchFilters, StoredHit

__all__ = [
    "HitRows",
    "Phrase",
    "SearchLimits",
    "both_arms",
    "hydrate",
    "keyword_ranked",
    "keyword_search",
    "vector_scored",
]

Scored = list[tuple[int, float]]

_HIT_COLUMNS = (
    "c.id, c.chunk_index, c.text, m.memory_id, m.bank_id, m.tags, m.metadata, "
    "m.occurred_at, m.retained_at, m.source"
)


# Chunks read per recall to find those whose text is the query (copies of one text are rarely more).
_EXACT_LIMIT = 32


@dataclass(frozen=True, slots=True)
class Phrase:
    """The query as an exact-text lookup: the FTS5 phrase of all its words, and the
    :func:`~astrocyte.fusion.text_key` a chunk's text must have to be the query."""

    fts: str
    key: str


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """``exact_max``: filtered candidate sets up to this size are scored exactly; ``window``: the
    keyword rank window (see :func:`keyword_ranked`)."""

    exact_max: int
    window: int


def vector_scored(
    conn: sqlite3.Connection,
    index: VectorIndex,
    banks: list[str],
    query: np.ndarray,
    k: int,
    filters: SearchFilters,
    exact_max: int,
) -> Scored:
    """The best ``k`` chunks by exact cosine, as ``(chunk id, score)`` best first; filters are exact.

    Filters are applied after the ANN search with over-fetch; a selective filter (at most
    ``exact_max`` matching chunks) is answered by scoring every matching chunk instead."""
    where, params = filter_sql(banks, filters)
    total = index.size(banks)
    if has_filters(filters):
        exact = _exact_candidates(conn, where, params, exact_max)
        if exact is not None:
            return _rescore(conn, exact, query, k, "", [])
        # Not selective: at least exact_max rows match, so k*total/exact_max neighbours contain
        # k matches on average; over-fetch, then widen until k are found.
        fetch = max(4 * k, k * total // max(exact_max, 1))
    else:
        # The banks' own indexes hold only their chunks (and hydration checks the bank again):
        # re-reading a candidate needs no join, only its row still being there.
        where, params = "", []
        fetch = max(2 * k, 20)
    while True:
        keys = index.search(banks, query, fetch)
        scored = _rescore(conn, keys, query, k, where, params)
        if len(scored) >= k or fetch >= total:
            return scored
        fetch *= 4


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
    conn: sqlite3.Connection, keys: list[int], query: np.ndarray, k: int, where: str, params: list[Any]
) -> Scored:
    """Read candidate chunks (those still present and, with ``where``, matching it), score them by
    exact cosine against their stored float32 vectors, and return the best ``k``."""
    if not len(keys):
        return []
    # CROSS JOIN pins the join order: probe the few candidate ids, never scan the bank.
    join = f" CROSS JOIN memories m ON m.id = c.memory WHERE {where}" if where else ""
    rows = conn.execute(
        f"SELECT c.id, c.embedding FROM json_each(?) AS j CROSS JOIN chunks c ON c.id = j.value{join}",
        [json.dumps(keys), *params],
    ).fetchall()
    if not rows:
        return []
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), query.size)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
    scores = np.clip((matrix @ query) / np.where(norms == 0, 1.0, norms), -1.0, 1.0)
    # Ties break on chunk id so results are deterministic.
    order = np.lexsort((ids, -scores))[:k]
    return list(zip(ids[order].tolist(), scores[order].tolist(), strict=True))


def keyword_ranked(
    conn: sqlite3.Connection,
    banks: list[str],
    words: list[str],
    k: int,
    filters: SearchFilters,
    window: int,
    foreign: int | None,
    phrase: Phrase | None = None,
) -> Scored:
    """``(chunk id, BM25 score)`` best first (higher is better) over the chunks holding any of
    ``words``, exact when at most ``window`` chunks match. With ``phrase``, chunks whose text is
    the query word for word come first (scored as the best BM25 hit), whatever their BM25 rank.

    BM25 costs a few microseconds per matching chunk, so a broad query over a large bank would
    cost tens of milliseconds. Past ``window`` matches the candidates are the ``window`` most recent
    matching chunks plus, over all time, the best chunks holding every word.

    Banks are restricted inside the MATCH expression (each chunk's ``bank_key`` column holds one
    token naming its bank), so FTS5 intersects posting lists instead of SQLite joining every match.
    When the searched banks hold most of the store even that costs more than it saves, so the
    caller passes ``foreign``, the number of chunks other banks hold: the words are matched alone
    and up to ``k + min(foreign, k)`` pairs are returned, foreign chunks included (hydration with
    the banks drops those). With filters the banks are joined in SQL and nothing foreign comes back.
    """
    in_words = f"{{text}} : ({' OR '.join(words)})"
    every_word = f"{{text}} : ({' AND '.join(words)})" if len(words) > 1 else None
    params: list[Any] = []
    scope = "FROM chunks_fts WHERE chunks_fts MATCH ?"
    in_banks = "{bank_key} : (" + " OR ".join(f'"{bank_key(bank)}"' for bank in banks) + ")"
    if has_filters(filters):
        where, params = filter_sql(banks, filters)
        scope = "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid JOIN memories m ON m.id = c.memory "
        scope += f"WHERE chunks_fts MATCH ? AND {where}"
    elif foreign is None:
        in_words += f" AND {in_banks}"
        every_word = every_word and f"{every_word} AND {in_banks}"
    ranked = _bm25_ranked(conn, scope, params, in_words, every_word, k, window, foreign)
    if phrase is None:
        return ranked
    exact = _exact_text(
        conn, scope, params, f"{{text}} : {phrase.fts}" + ("" if params else f" AND {in_banks}"), phrase.key
    )
    if not exact:
        return ranked
    top = ranked[0][1] if ranked else 1.0
    held = set(exact)
    return [(chunk_id, top) for chunk_id in sorted(exact)] + [pair for pair in ranked if pair[0] not in held]


def _exact_text(conn: sqlite3.Connection, scope: str, params: list[Any], match: str, key: str) -> list[int]:
    """Chunk ids whose text has ``key``, among those holding the phrase ``match``: any
    :data:`_EXACT_LIMIT` of them first (one page of the posting lists), then, when that many came
    back without the text itself (a phrase many longer chunks contain), the shortest holding it
    (a chunk that is the phrase is among them; BM25 would prefer chunks repeating it)."""
    query = f"SELECT chunks_fts.rowid, chunks_fts.text {scope}"
    rows = conn.execute(f"{query} LIMIT ?", [match, *params, _EXACT_LIMIT]).fetchall()
    exact = [chunk_id for chunk_id, text in rows if text_key(text) == key]
    if exact or len(rows) < _EXACT_LIMIT:
        return exact
    rows = conn.execute(
        f"{query} ORDER BY length(chunks_fts.text) LIMIT ?", [match, *params, _EXACT_LIMIT]
    ).fetchall()
    return [chunk_id for chunk_id, text in rows if text_key(text) == key]


def _bm25_ranked(
    conn: sqlite3.Connection,
    scope: str,
    params: list[Any],
    in_words: str,
    every_word: str | None,
    k: int,
    window: int,
    foreign: int | None,
) -> Scored:
    """:func:`keyword_ranked`'s BM25 ranking (``scope`` is the FROM/WHERE with one MATCH slot)."""
    # Room for the foreign chunks hydration will drop (none when the banks are in the SQL).
    fetch = k + min(foreign, k) if foreign is not None and not params else k
    # The bank_key column gets weight 0: only the words score.
    base = f"SELECT chunks_fts.rowid, bm25(chunks_fts, 1.0, 0.0) {scope}"
    limit = max(window, k)  # the window must hold k chunks to return k
    newest = conn.execute(
        f"SELECT chunks_fts.rowid {scope} ORDER BY chunks_fts.rowid DESC LIMIT 1 OFFSET ?",
        [in_words, *params, limit - 1],
    ).fetchone()
    if newest is None:
        return [
            (i, -rank)
            for i, rank in conn.execute(f"{base} ORDER BY 2, 1 LIMIT ?", [in_words, *params, fetch])
        ]
    ranked = conn.execute(
        f"{base} AND chunks_fts.rowid >= ? ORDER BY 2, 1 LIMIT ?", [in_words, *params, newest[0], fetch]
    ).fetchall()
    if every_word:
        ranked += conn.execute(f"{base} ORDER BY 2, 1 LIMIT ?", [every_word, *params, fetch]).fetchall()
    best: dict[int, float] = {}
    for chunk_id, rank in ranked:
        best[chunk_id] = min(rank, best.get(chunk_id, rank))
    # FTS5's bm25() is lower-is-better (negative); the store contract wants higher-is-better.
    return [(chunk_id, -rank) for chunk_id, rank in sorted(best.items(), key=lambda item: (item[1], item[0]))]


def keyword_search(
    conn: sqlite3.Connection,
    cache: HitRows,
    banks: list[str],
    words: list[str],
    k: int,
    filters: SearchFilters,
    window: int,
    foreign: int | None,
    phrase: Phrase | None = None,
) -> list[StoredHit]:
    """The keyword arm as hits: :func:`keyword_ranked`, hydrated, at most ``k``. When matching
    the words alone (``foreign`` given) let foreign chunks crowd the banks' own out, it asks again
    bank-scoped."""
    scored = keyword_ranked(conn, banks, words, k, filters, window, foreign, phrase)
    hits = hydrate(conn, cache, [scored], banks, k)[0]
    if foreign is not None and len(hits) < k:
        return keyword_search(conn, cache, banks, words, k, filters, window, None, phrase)
    return list(hits)


def both_arms(
    conn: sqlite3.Connection,
    cache: HitRows,
    index: VectorIndex,
    banks: list[str],
    vector: np.ndarray,
    words: list[str],
    k: int,
    filters: SearchFilters,
    limits: SearchLimits,
    foreign: int | None,
    phrase: Phrase | None = None,
) -> tuple[Sequence[StoredHit], Sequence[StoredHit]]:
    """The vector arm and the keyword arm (as :func:`vector_scored` and :func:`keyword_search`
    would return them), with one hydrating statement (at most) for both."""
    by_vector = vector_scored(conn, index, banks, vector, k, filters, limits.exact_max)
    by_keyword = (
        keyword_ranked(conn, banks, words, k, filters, limits.window, foreign, phrase) if words else []
    )
    vector_hits, keyword_hits = hydrate(conn, cache, [by_vector, by_keyword], banks, k)
    arm: Sequence[StoredHit] = keyword_hits
    if foreign is not None and len(keyword_hits) < k and len(by_keyword) > len(keyword_hits):
        # Some were dropped (foreign, or deleted meanwhile): ask again bank-scoped.
        arm = keyword_search(conn, cache, banks, words, k, filters, limits.window, None, phrase)
    return vector_hits, arm


class HitRows:
    """Hit fields by chunk id, parsed once and kept for later searches (at most ``capacity``, the
    oldest entries evicted first).

    Sound because a chunk row never changes once written and chunk ids are never reused; whether
    the chunk still exists is not cached: searches only ask for ids their own read snapshot just
    returned (see :meth:`SQLiteThreads.read`)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._rows: dict[int, _Fields] = {}
        self._lock = threading.Lock()

    def fetch(self, conn: sqlite3.Connection, ids: list[int]) -> Callable[[int], _Fields | None]:
        """A lookup of the fields of ``ids`` (None for ids that do not exist), reading from
        ``conn`` only the rows not held yet."""
        held = self._rows
        missing = [chunk_id for chunk_id in ids if chunk_id not in held]
        if not missing:
            return held.get
        rows = conn.execute(
            f"SELECT {_HIT_COLUMNS} FROM json_each(?) AS j CROSS JOIN chunks c ON c.id = j.value "
            "CROSS JOIN memories m ON m.id = c.memory",
            [json.dumps(missing)],
        ).fetchall()
        parsed = {row[0]: _parse(row) for row in rows}
        self._remember(parsed)
        return lambda chunk_id: held.get(chunk_id) or parsed.get(chunk_id)

    def _remember(self, parsed: dict[int, _Fields]) -> None:
        if not self._capacity:
            return
        with self._lock:
            rows = self._rows
            rows.update(parsed)
            excess = len(rows) - self._capacity
            if excess > 0:
                for chunk_id in list(islice(rows, excess)):
                    del rows[chunk_id]


class LazyHits(Sequence[StoredHit]):
    """An arm's hits, each built when first indexed: ``memory_ids`` and ``scores`` are at hand, so
    fusion can rank memories and cut by score without building the hits it never returns."""

    __slots__ = ("_refs", "memory_ids", "scores")

    def __init__(self, refs: list[tuple[_Fields, float]]) -> None:
        self._refs = refs
        self.memory_ids = [fields[0] for fields, _ in refs]
        self.scores = [score for _, score in refs]

    def __len__(self) -> int:
        return len(self._refs)

    @property
    def texts(self) -> list[str]:
        """Each hit's chunk text, without building the hits."""
        return [fields[3] for fields, _ in self._refs]

    @overload
    def __getitem__(self, index: int) -> StoredHit: ...

    @overload
    def __getitem__(self, index: slice) -> LazyHits: ...

    def __getitem__(self, index: int | slice) -> StoredHit | LazyHits:
        if isinstance(index, slice):
            return LazyHits(self._refs[index])
        return _hit(*self._refs[index])

    def __iter__(self) -> Iterator[StoredHit]:
        return (_hit(fields, score) for fields, score in self._refs)


def hydrate(
    conn: sqlite3.Connection,
    cache: HitRows,
    arms: Sequence[Scored],
    banks: Sequence[str],
    limit: int | None = None,
) -> list[LazyHits]:
    """Hits for each arm's ``(chunk id, score)`` pairs, in the given order, skipping ids gone and
    chunks outside ``banks``, at most ``limit`` per arm; one statement (or none) for every arm."""
    ids = list(dict.fromkeys(chunk_id for arm in arms for chunk_id, _ in arm))
    if not ids:
        return [LazyHits([]) for _ in arms]
    fields_of = cache.fetch(conn, ids)
    wanted = set(banks)
    out: list[LazyHits] = []
    for arm in arms:
        refs: list[tuple[_Fields, float]] = []
        for chunk_id, score in arm:
            found = fields_of(chunk_id)
            if found is not None and found[1] in wanted:
                refs.append((found, score))
                if len(refs) == limit:
                    break
        out.append(LazyHits(refs))
    return out


# memory_id, bank_id, chunk_index, text, tags, metadata, occurred_at, retained_at, source
# (metadata stays JSON text: every hit gets its own parsed copy, the cache no shared object)
_Fields = tuple[str, str, int, str, tuple[str, ...], str, datetime | None, datetime, str | None]


def _parse(row: Sequence[Any]) -> _Fields:
    _, chunk_index, text, memory_id, bank_id, tags, metadata, occurred_at, retained_at, source = row[:10]
    return (
        memory_id,
        bank_id,
        chunk_index,
        text,
        tuple(json.loads(tags)) if tags != "[]" else (),
        metadata,
        datetime.fromisoformat(occurred_at) if occurred_at else None,
        datetime.fromisoformat(retained_at),
        source,
    )


def _hit(fields: _Fields, score: float) -> StoredHit:
    memory_id, bank_id, chunk_index, text, tags, metadata, occurred_at, retained_at, source = fields
    parsed = json.loads(metadata) if metadata != "{}" else {}
    return StoredHit(
        memory_id, bank_id, chunk_index, text, score, tags, parsed, occurred_at, retained_at, source
    )
