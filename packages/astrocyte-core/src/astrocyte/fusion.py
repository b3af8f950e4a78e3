"""Reciprocal rank fusion (Cormack et al., 2009) of the vector and keyword arms.

Each arm's chunk hits are first collapsed to memories (a memory ranks where its best chunk does), so
a long memory with many matching chunks does not crowd out others. A memory's fused score is
``sum(1 / (k + rank))`` over the arms that found it, ranks starting at 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from astrocyte.types import StoredHit

__all__ = ["FusedHit", "above", "collapse", "reciprocal_rank_fusion", "max_fused_score"]


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


def reciprocal_rank_fusion(arms: Sequence[Sequence[StoredHit]], k: int = 60) -> list[FusedHit]:
    """Fuse ranked arms into one list of memories, best first (ties keep first-seen order).

    An arm exposing ``memory_ids`` (one per hit) is fused from those alone, so hits are read only
    for the memories a caller looks at."""
    # Plain dicts in the loop (this runs on every recall); FusedHit objects only at the end.
    scores: dict[str, float] = {}
    first: dict[str, tuple[Sequence[StoredHit], int]] = {}
    for arm in arms:
        memory_ids: Sequence[str] = getattr(arm, "memory_ids", None) or [hit.memory_id for hit in arm]
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
                first[memory_id] = (arm, position)
    order = sorted(scores, key=scores.__getitem__, reverse=True)  # stable: ties keep first-seen order
    return [FusedHit(*first[memory_id], scores[memory_id]) for memory_id in order]


def max_fused_score(arm_count: int, k: int = 60) -> float:
    """The best possible fused score: first in every arm. Dividing by it maps scores to 0..1."""
    return arm_count / (k + 1)
