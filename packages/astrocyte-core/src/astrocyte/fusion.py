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
    fused: dict[str, FusedHit] = {}
    for arm in arms:
        for rank, hit in enumerate(collapse(arm), start=1):
            contribution = 1.0 / (k + rank)
            entry = fused.get(hit.memory_id)
            if entry is None:
                fused[hit.memory_id] = FusedHit(hit, contribution)
            else:
                entry.score += contribution
    return sorted(fused.values(), key=lambda f: f.score, reverse=True)


def max_fused_score(arm_count: int, k: int = 60) -> float:
    """The best possible fused score: first in every arm. Dividing by it maps scores to 0..1."""
    return arm_count / (k + 1)
