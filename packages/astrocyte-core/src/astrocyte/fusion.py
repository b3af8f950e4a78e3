"""Reciprocal rank fusion (Cormack et al., 2009) of the vector and keyword arms.

Each arm's chunk hits are first collapsed to memories (a memory ranks where its best chunk does), so
a long memory with many matching chunks does not crowd out others. A memory's fused score is
``sum(1 / (k + rank))`` over the arms that found it, ranks starting at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from astrocyte.types import StoredHit

__all__ = ["FusedHit", "collapse", "reciprocal_rank_fusion", "max_fused_score"]


@dataclass(slots=True)
class FusedHit:
    """One memory after fusion: the best chunk seen for it and its fused score."""

    hit: StoredHit
    score: float


def collapse(hits: Sequence[StoredHit]) -> list[StoredHit]:
    """Keep each memory's first (best-ranked) chunk; arms return hits best first."""
    seen: set[str] = set()
    out: list[StoredHit] = []
    for hit in hits:
        if hit.memory_id not in seen:
            seen.add(hit.memory_id)
            out.append(hit)
    return out


def reciprocal_rank_fusion(arms: Sequence[Sequence[StoredHit]], k: int = 60) -> list[FusedHit]:
    """Fuse ranked arms into one list of memories, best first (ties keep first-seen order)."""
    # Plain dicts in the loop (this runs on every recall); FusedHit objects only at the end.
    scores: dict[str, float] = {}
    first: dict[str, StoredHit] = {}
    for arm in arms:
        seen: set[str] = set()
        for hit in arm:
            memory_id = hit.memory_id
            if memory_id in seen:
                continue  # collapse: a memory ranks where its best chunk does
            seen.add(memory_id)
            contribution = 1.0 / (k + len(seen))
            if memory_id in scores:
                scores[memory_id] += contribution
            else:
                scores[memory_id] = contribution
                first[memory_id] = hit
    order = sorted(scores, key=scores.__getitem__, reverse=True)  # stable: ties keep first-seen order
    return [FusedHit(first[memory_id], scores[memory_id]) for memory_id in order]


def max_fused_score(arm_count: int, k: int = 60) -> float:
    """The best possible fused score: first in every arm. Dividing by it maps scores to 0..1."""
    return arm_count / (k + 1)
