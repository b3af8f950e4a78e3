"""Reciprocal rank fusion (Cormack et al., 2009) of the vector and keyword arms.

Each arm's chunk hits are first collapsed to memories (a memory ranks where its best chunk does), so
a long memory with many matching chunks does not crowd out others. A memory's fused score is
``sum(1 / (k + rank))`` over the arms that found it, ranks starting at 1.

An exact match outranks every fused score: a memory whose text is the query word for word (see
:func:`text_key`), then one whose vector is the query vector, comes first with the best possible
score, whatever rank fusion would have given it. Stores put such chunks at the head of their arms
(the store contract checks it), so finding them costs a look at the first hits only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from astrocyte.types import StoredHit

__all__ = [
    "IDENTICAL_SIMILARITY",
    "FusedHit",
    "above",
    "collapse",
    "exact_matches",
    "max_fused_score",
    "reciprocal_rank_fusion",
    "text_key",
]

_WORD = re.compile(r"\w+")
# Cosine similarity from which a vector counts as the query's own (float32 rounding of a product
# of identical unit vectors stays well within this).
IDENTICAL_SIMILARITY = 1.0 - 1e-5


class FusedHit:
    """One memory after fusion: the best chunk seen for it (read from its arm when first asked
    for: most fused memories are only counted, never shown) and its fused score."""

    __slots__ = ("_arm", "_position", "score")

    def __init__(self, arm: Sequence[StoredHit], position: int, score: float) -> None:
        self._arm = arm
        self._position = position
        self.score = score

    @property
    def hit(self) -> StoredHit:
        return self._arm[self._position]


def collapse(hits: Sequence[StoredHit]) -> list[StoredHit]:
    """Keep each memory's first (best-ranked) chunk; arms return hits best first."""
    seen: set[str] = set()
    out: list[StoredHit] = []
    for hit in hits:
        if hit.memory_id not in seen:
            seen.add(hit.memory_id)
            out.append(hit)
    return out


def above(arm: Sequence[StoredHit], threshold: float) -> Sequence[StoredHit]:
    """The hits of ``arm`` scoring above ``threshold``. An arm exposing ``scores`` (best first, as
    the SQLite store's lazily read arms do) is cut without reading its hits."""
    scores: Sequence[float] | None = getattr(arm, "scores", None)
    if scores is None:
        return [hit for hit in arm if hit.score > threshold]
    return arm[: sum(1 for score in scores if score > threshold)]


def text_key(text: str) -> str:
    """``text`` reduced to what an exact match compares: its lower-cased words, in order (so case,
    punctuation and spacing do not matter, and one word more or less does)."""
    return " ".join(_WORD.findall(text.lower()))


def _texts(arm: Sequence[StoredHit]) -> Sequence[str]:
    texts: Sequence[str] | None = getattr(arm, "texts", None)
    return texts if texts is not None else [hit.text for hit in arm]


def exact_matches(query: str, by_vector: Sequence[StoredHit], by_keyword: Sequence[StoredHit]) -> list[str]:
    """Memory ids of the exact matches at the head of the arms, best first: chunks whose text is
    the query (:func:`text_key`), from either arm, then chunks whose vector is the query's
    (similarity at least :data:`IDENTICAL_SIMILARITY`) from the vector arm."""
    key = text_key(query)
    out: dict[str, None] = {}
    if key:
        for arm in (by_keyword, by_vector):
            texts, ids = _texts(arm), _memory_ids(arm)
            for position, text in enumerate(texts):
                if text_key(text) != key:
                    break
                out[ids[position]] = None
    scores: Sequence[float] | None = getattr(by_vector, "scores", None)
    if scores is None:
        scores = [hit.score for hit in by_vector]
    ids = _memory_ids(by_vector)
    for position, score in enumerate(scores):
        if score < IDENTICAL_SIMILARITY:
            break
        out.setdefault(ids[position], None)
    return list(out)


def _memory_ids(arm: Sequence[StoredHit]) -> Sequence[str]:
    memory_ids: Sequence[str] | None = getattr(arm, "memory_ids", None)
    return memory_ids if memory_ids is not None else [hit.memory_id for hit in arm]


def reciprocal_rank_fusion(
    arms: Sequence[Sequence[StoredHit]], k: int = 60, first: Sequence[str] = ()
) -> list[FusedHit]:
    """Fuse ranked arms into one list of memories, best first (ties keep first-seen order).

    ``first`` (memory ids, from :func:`exact_matches`) go ahead of everything else, in that order,
    scored :func:`max_fused_score`. An arm exposing ``memory_ids`` (one per hit) is fused from
    those alone, so hits are read only for the memories a caller looks at."""
    # Plain dicts in the loop (this runs on every recall); FusedHit objects only at the end.
    scores: dict[str, float] = {}
    seen_first: dict[str, tuple[Sequence[StoredHit], int]] = {}
    for arm in arms:
        memory_ids = _memory_ids(arm)
        seen: set[str] = set()
        for position, memory_id in enumerate(memory_ids):
            if memory_id in seen:
                continue  # collapse: a memory ranks where its best chunk does
            seen.add(memory_id)
            contribution = 1.0 / (k + len(seen))
            if memory_id in scores:
                scores[memory_id] += contribution
            else:
                scores[memory_id] = contribution
                seen_first[memory_id] = (arm, position)
    order = sorted(scores, key=scores.__getitem__, reverse=True)  # stable: ties keep first-seen order
    if first:
        pinned = [memory_id for memory_id in first if memory_id in scores]
        best = max_fused_score(len(arms), k)
        for memory_id in pinned:
            scores[memory_id] = best
        held = set(pinned)
        order = pinned + [memory_id for memory_id in order if memory_id not in held]
    return [FusedHit(*seen_first[memory_id], scores[memory_id]) for memory_id in order]


def max_fused_score(arm_count: int, k: int = 60) -> float:
    """The best possible fused score: first in every arm. Dividing by it maps scores to 0..1."""
    return arm_count / (k + 1)
