"""SQL fragments the SQLite store builds from requests: filter and forget clauses, FTS5 terms,
and the value encodings those clauses compare against (bank tokens, UTC microseconds).

Pure functions, no connection: callers validate here, on the event loop, and run the SQL on a
worker thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

from astrocyte.fusion import text_key
from astrocyte.types import ForgetSelector, SearchFilters

__all__ = [
    "bank_key",
    "filter_sql",
    "fts_query",
    "fts_words",
    "has_filters",
    "micros",
    "selector_sql",
    "text_hash",
    "vector_hash",
]

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


def bank_key(bank_id: str) -> str:
    """The FTS token standing for ``bank_id``: letters and digits only, so it is one token."""
    return "k" + blake2b(bank_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def micros(moment: datetime) -> int:
    """UTC microseconds since the epoch; a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


def has_filters(filters: SearchFilters) -> bool:
    """Whether ``filters`` restricts anything beyond the banks."""
    return bool(filters.tags) or filters.start is not None or filters.end is not None


def filter_sql(banks: Sequence[str], filters: SearchFilters, alias: str = "m") -> tuple[str, list[Any]]:
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
        params.append(micros(filters.start))
    if filters.end is not None:
        clauses.append("m.event_us < ?")
        params.append(micros(filters.end))
    tags = list(dict.fromkeys(filters.tags))
    if tags:
        clauses.append(
            "(SELECT COUNT(*) FROM memory_tags t WHERE t.memory = m.id "
            "AND t.tag IN (SELECT value FROM json_each(?))) = ?"
        )
        params += [json.dumps(tags), len(tags)]
    return " AND ".join(clauses), params


def selector_sql(bank_id: str, selector: ForgetSelector) -> tuple[str, list[Any]]:
    """A WHERE clause over ``memories m`` for a forget selector (validated here, off the thread)."""
    selector.check()
    where, params = filter_sql([bank_id], SearchFilters(tags=tuple(selector.tags)))
    if selector.memory_ids:
        where += " AND m.memory_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(list(selector.memory_ids)))
    if selector.before is not None:
        where += " AND m.retained_us < ?"
        params.append(micros(selector.before))
    return where, params


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


def vector_hash(embedding: bytes) -> int:
    """A stable 63-bit hash of a chunk's float32 embedding bytes: the indexed
    ``chunks.vector_hash`` column, so that the chunks whose vector *is* the query's are found by
    one index probe whatever the approximate graph misses (equal vectors are confirmed by
    rescoring them exactly)."""
    return int.from_bytes(blake2b(embedding, digest_size=8).digest(), "little") >> 1


def text_hash(text: str) -> int:
    """A stable 63-bit hash of :func:`~astrocyte.fusion.text_key` of ``text``: the indexed
    ``chunks.text_hash`` column, so that finding the chunks whose text is a query is one index
    probe at any store size (an FTS5 phrase lookup walks every posting of every word in it, "the"
    included: ~10 ms at 100k memories). Equal hashes are confirmed by comparing the keys."""
    digest = blake2b(text_key(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
