"""The SQLite store's read path, run on a reader thread: the vector arm (ANN candidates re-read and
re-scored exactly), the keyword arm (FTS5 BM25), and hydration of chunk ids into hits.

Each arm first ranks bare ``(chunk id, score)`` pairs; rows are read in full only for the pairs
kept, in one statement (``hydrate``), so a recall that runs both arms (``both_arms``) pays one
statement for the hits of both, and none for rows it has parsed before (``HitRows``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, overload

import numpy as np

from astrocyte.fusion import text_key
from astrocyte.stores._sqlite_sql import bank_key, filter_sql, has_filters, vector_hash
from astrocyte.stores._vector_index import VectorIndex
from astrocyte.types import SearchFilters, StoredHit

__all__ = [
    "HitRows",
    "Phrase",
    "SearchLimits",
    "TermStats",
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
# Query words BM25 ranks at most (the rarest; see TermStats).
_MAX_RANKED_WORDS = 8
# Words the FTS vocabulary can be asked about directly: unicode61 indexes these unchanged (other
# words it may fold or split, so they are ranked without a count).
_PLAIN_WORD = re.compile(r'"[a-z0-9]+"')
# The per-connection vocabulary table TermStats reads (see READER_SETUP).
READER_SETUP = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab USING fts5vocab(main, chunks_fts, row)"


@dataclass(frozen=True, slots=True)
class Phrase:
    """The query as an exact-text lookup: the :func:`~astrocyte.fusion.text_key` a chunk's text
    must have to be the query, and its :func:`~astrocyte.stores._sqlite_sql.text_hash`."""

    key: str
    hash: int


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
    ahead: Future[list[int]] | None = None,
) -> Scored:
    """The best ``k`` chunks by exact cosine, as ``(chunk id, score)`` best first; filters are exact.

    Filters are applied after the ANN search with over-fetch; a selective filter (at most
    ``exact_max`` matching chunks) is answered by scoring every matching chunk instead. ``ahead``
    is the unfiltered first search (:func:`search_ahead`), started before this call."""
    where, params = filter_sql(banks, filters)
    total = index.size(banks)
    if has_filters(filters):
        exact = _exact_candidates(conn, where, params, exact_max)
        if exact is not None:
            return _rescore(conn, exact, query, k, "", [])
        # Not selective: at least exact_max rows match, so k*total/exact_max neighbours contain
        # k matches on average; over-fetch, then widen until k are found.
        fetch = max(4 * k, k * total // max(exact_max, 1))
        recheck, recheck_params = where, params
    else:
        # The banks' own indexes hold only their chunks (and hydration checks the bank again):
        # re-reading a candidate needs no join, only its row still being there.
        fetch = _unfiltered_fetch(k)
        recheck, recheck_params = "", []
    # Chunks whose vector is the query's are candidates whatever a graph walk finds (an exact
    # search already scores them all).
    identical = [] if index.searched_exactly(banks) else _identical_vector(conn, where, params, query)
    held = set(identical)
    while True:
        keys = ahead.result() if ahead is not None else index.search(banks, query, fetch)
        ahead = None
        if identical:
            keys = [*identical, *(key for key in keys if key not in held)]
        scored = _rescore(conn, keys, query, k, recheck, recheck_params)
        if len(scored) >= k or fetch >= total:
            return scored
        fetch *= 4


def _identical_vector(
    conn: sqlite3.Connection, where: str, params: list[Any], query: np.ndarray
) -> list[int]:
    """Ids of the chunks (in the banks, matching the filters) whose stored vector is byte for byte
    the query's: one probe of the ``vector_hash`` index (at most :data:`_EXACT_LIMIT` of them)."""
    rows = conn.execute(
        "SELECT c.id FROM chunks c CROSS JOIN memories m ON m.id = c.memory "
        f"WHERE c.vector_hash = ? AND {where} LIMIT ?",
        [vector_hash(query.tobytes()), *params, _EXACT_LIMIT],
    ).fetchall()
    return [row[0] for row in rows]


def _unfiltered_fetch(k: int) -> int:
    return max(2 * k, 20)


def search_ahead(
    searcher: Executor,
    index: VectorIndex,
    banks: list[str],
    query: np.ndarray,
    k: int,
    filters: SearchFilters,
) -> Future[list[int]] | None:
    """Start the vector arm's graph search on ``searcher`` (no connection needed), so that it runs
    while this thread's connection answers the keyword arm: usearch and SQLite both release the
    GIL, so on two cores a recall takes the longer arm's time, not the sum (at a million memories
    the graph search alone is ~7 ms here). Filtered searches plan theirs from the file first."""
    if has_filters(filters):
        return None
    return searcher.submit(index.search, banks, query, _unfiltered_fetch(k))


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
    # In float64: float32 cannot tell a stored copy of the query (cosine 1) from a near-copy
    # within ~1e-7 of it, and a few dozen rows cost nothing either way.
    matrix64, query64 = matrix.astype(np.float64), query.astype(np.float64)
    norms = np.linalg.norm(matrix64, axis=1) * float(np.linalg.norm(query64))
    scores = np.clip((matrix64 @ query64) / np.where(norms == 0, 1.0, norms), -1.0, 1.0)
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
    matching chunks plus the ``window`` most recent holding every word (however old: those are
    few). Which words to pass is :class:`TermStats`'s choice.

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
    exact = _exact_text(conn, banks, filters, phrase)
    if not exact:
        return ranked
    top = ranked[0][1] if ranked else 1.0
    held = set(exact)
    return [(chunk_id, top) for chunk_id in sorted(exact)] + [pair for pair in ranked if pair[0] not in held]


def _exact_text(
    conn: sqlite3.Connection, banks: list[str], filters: SearchFilters, phrase: Phrase
) -> list[int]:
    """Ids of the chunks in ``banks`` matching ``filters`` whose text is the query word for word:
    one probe of the ``text_hash`` index, hashes confirmed by the keys (at most
    :data:`_EXACT_LIMIT` of them: copies of one text are rarely more)."""
    where, params = filter_sql(banks, filters)
    rows = conn.execute(
        "SELECT c.id, c.text FROM chunks c CROSS JOIN memories m ON m.id = c.memory "
        f"WHERE c.text_hash = ? AND {where} LIMIT ?",
        [phrase.hash, *params, _EXACT_LIMIT],
    ).fetchall()
    return [chunk_id for chunk_id, text in rows if text_key(text) == phrase.key]


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
    limit = max(window, k)  # the window must hold k chunks to return k
    ranked, complete = _ranked_window(conn, scope, params, in_words, limit, fetch)
    if complete:
        return ranked
    if every_word:
        # Chunks holding every word are few, but at a million memories two words that go together
        # are not: they too are ranked within a window (their newest ``limit``).
        ranked += _ranked_window(conn, scope, params, every_word, limit, fetch)[0]
    best: dict[int, float] = {}
    for chunk_id, score in ranked:
        best[chunk_id] = max(score, best.get(chunk_id, score))
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def _ranked_window(
    conn: sqlite3.Connection, scope: str, params: list[Any], match: str, limit: int, fetch: int
) -> tuple[Scored, bool]:
    """The best ``fetch`` of the newest ``limit`` chunks matching ``match`` by BM25 (higher is
    better), and whether those were every match."""
    # The bank_key column gets weight 0: only the words score. FTS5's bm25() is lower-is-better.
    base = f"SELECT chunks_fts.rowid, -bm25(chunks_fts, 1.0, 0.0) {scope}"
    newest = conn.execute(
        f"SELECT chunks_fts.rowid {scope} ORDER BY chunks_fts.rowid DESC LIMIT 1 OFFSET ?",
        [match, *params, limit - 1],
    ).fetchone()
    if newest is None:
        return conn.execute(f"{base} ORDER BY 2 DESC, 1 LIMIT ?", [match, *params, fetch]).fetchall(), True
    rows = conn.execute(
        f"{base} AND chunks_fts.rowid >= ? ORDER BY 2 DESC, 1 LIMIT ?", [match, *params, newest[0], fetch]
    ).fetchall()
    return rows, False


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
    searcher: Executor | None = None,
) -> tuple[Sequence[StoredHit], Sequence[StoredHit]]:
    """The vector arm and the keyword arm (as :func:`vector_scored` and :func:`keyword_search`
    would return them), with one hydrating statement (at most) for both; with ``searcher``, the
    graph search runs beside the keyword arm (:func:`search_ahead`)."""
    ahead = search_ahead(searcher, index, banks, vector, k, filters) if searcher is not None else None
    try:
        by_keyword = (
            keyword_ranked(conn, banks, words, k, filters, limits.window, foreign, phrase) if words else []
        )
    except BaseException:
        if ahead is not None:
            ahead.cancel()
        raise
    by_vector = vector_scored(conn, index, banks, vector, k, filters, limits.exact_max, ahead)
    vector_hits, keyword_hits = hydrate(conn, cache, [by_vector, by_keyword], banks, k)
    arm: Sequence[StoredHit] = keyword_hits
    if foreign is not None and len(keyword_hits) < k and len(by_keyword) > len(keyword_hits):
        # Some were dropped (foreign, or deleted meanwhile): ask again bank-scoped.
        arm = keyword_search(conn, cache, banks, words, k, filters, limits.window, None, phrase)
    return vector_hits, arm


class TermStats:
    """How many chunks hold each query word (FTS5's document frequency, read through the
    ``fts5vocab`` table each reader connection has, see :data:`READER_SETUP`), so that BM25 ranks
    only the words that can change a ranking.

    BM25 costs per word and per chunk it ranks, and FTS5 walks every posting of every word of the
    query: a chat-length message cost ~9 ms at 10k memories, a word that 30% of a 100k store holds
    ~6 ms alone, ten times that at 1M. :meth:`choose` drops words no chunk holds (they match
    nothing: lossless). In a store of at least ``pervasive_from`` chunks it also drops, while the
    query has a rarer word, words more than one chunk in ``common_share`` holds, as search engines'
    "common terms" cut-off does: their IDF is a fraction of a rare word's, they barely reorder the
    chunks the rare words find, and OR-ed in they fill the rank window with chunks sharing nothing
    else (a small store ranks every match at little cost, and there such a word may be a name that
    a few memories share). Then it keeps the :data:`_MAX_RANKED_WORDS` rarest.

    Counting a word's chunks walks its posting list (~0.1 µs a chunk), so counts are cached: a
    present word's while the store is within a quarter of the size it was counted at (the choice
    needs the order of magnitude, not the count), an absent word's only within the write
    generation it was counted in (the next write may bring it)."""

    def __init__(self, pervasive_from: int = 10_000, common_share: int = 20, capacity: int = 100_000) -> None:
        self._pervasive_from = pervasive_from
        self._common_share = common_share
        self._capacity = capacity
        # word -> (chunks holding it, store size when counted, generation when counted)
        self._counts: dict[str, tuple[int, int, int]] = {}

    def choose(self, conn: sqlite3.Connection, words: list[str], total: int, generation: int) -> list[str]:
        """The words of ``words`` (quoted FTS terms, as :func:`fts_words` makes) worth ranking,
        rarest first; words the vocabulary cannot be asked about are kept, as if rare."""
        counted: list[tuple[int, int, str]] = []
        for position, word in enumerate(words):
            count = self._count(conn, word, total, generation) if _PLAIN_WORD.fullmatch(word) else -1
            if count:
                counted.append((count, position, word))
        if not counted:
            return []
        informative = counted
        if total >= self._pervasive_from:
            share = self._common_share
            informative = [entry for entry in counted if entry[0] * share <= total] or counted
        return [word for _, _, word in sorted(informative)[:_MAX_RANKED_WORDS]]

    def _count(self, conn: sqlite3.Connection, word: str, total: int, generation: int) -> int:
        cached = self._counts.get(word)
        if cached is not None:
            count, size, counted_in = cached
            if (count and 4 * abs(total - size) <= size) or counted_in == generation:
                return count
        row = conn.execute("SELECT doc FROM temp.chunks_vocab WHERE term = ?", (word[1:-1],)).fetchone()
        count = int(row[0]) if row else 0
        if len(self._counts) >= self._capacity:
            self._counts.clear()
        self._counts[word] = (count, total, generation)
        return count


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
