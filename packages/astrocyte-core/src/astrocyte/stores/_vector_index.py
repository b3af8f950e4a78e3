"""In-memory approximate-nearest-neighbour index for the SQLite store: one usearch HNSW per bank.

Why one index per bank rather than one shared index with a bank filter: a search never walks other
tenants' vectors, so ``k`` needs no over-fetch to survive bank filtering; ``delete_bank`` is just
dropping an object; and a small bank (most of them, one per user) is searched exactly instead of
through a graph. Multi-bank search queries each named bank and merges.

The index is a cache of the chunk vectors stored as BLOBs in SQLite, keyed by chunk rowid. It may
hold keys whose rows were just deleted (the caller re-reads hits from SQLite, which drops them);
it never invents vectors. A snapshot of every bank can be saved beside the database and reloaded
when the database has not changed since (see :meth:`VectorIndex.save` / :meth:`VectorIndex.load`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

_MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """HNSW tuning: graph degree, build and search beam widths, vector storage type, and the
    bank size up to which search is exact (brute force) instead of through the graph."""

    connectivity: int = 16
    expansion_add: int = 40
    expansion_search: int = 256
    dtype: str = "i8"
    exact_below: int = 4096


class _BankIndex:
    """One bank's HNSW graph. A lock serialises mutation against search (usearch removal is not
    documented as safe concurrently with search)."""

    def __init__(self, dim: int, settings: IndexSettings, index: Index | None = None) -> None:
        self._settings = settings
        self._index = index or Index(
            ndim=dim,
            metric="cos",
            dtype=settings.dtype,
            connectivity=settings.connectivity,
            expansion_add=settings.expansion_add,
            expansion_search=settings.expansion_search,
        )
        self._lock = threading.Lock()
        self.tombstones = 0

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        with self._lock:
            self._index.add(keys, vectors, threads=threads)

    def contains(self, key: int) -> bool:
        with self._lock:
            return key in self._index

    def remove(self, keys: np.ndarray) -> int:
        with self._lock:
            removed = int(self._index.remove(keys))
            self.tombstones += removed
            return removed

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        with self._lock:
            size = len(self._index)
            if size == 0:
                return np.empty(0, dtype=np.uint64)
            exact = size <= self._settings.exact_below
            # One thread: the caller is already a worker thread; usearch's own pool costs more.
            matches = self._index.search(query, min(count, size), exact=exact, threads=1)
            return np.asarray(matches.keys, dtype=np.uint64)

    def save(self, path: Path) -> None:
        with self._lock:
            self._index.save(str(path))

    @classmethod
    def restore(cls, path: Path, settings: IndexSettings) -> _BankIndex:
        index = Index.restore(str(path))
        if index is None:
            raise ValueError(f"unreadable index snapshot {path}")
        index.expansion_search = settings.expansion_search  # type: ignore[misc]  # has a setter at runtime
        return cls(index.ndim, settings, index)


class VectorIndex:
    """Every bank's index, created on first use. Thread-safe: writers add and remove from the
    store's writer thread while readers search from theirs."""

    def __init__(self, settings: IndexSettings) -> None:
        self.settings = settings
        self.dim: int | None = None
        self._banks: dict[str, _BankIndex] = {}
        self._lock = threading.Lock()

    def size(self, bank_ids: Iterable[str]) -> int:
        """How many vectors the named banks hold together."""
        with self._lock:
            return sum(len(self._banks[b]) for b in bank_ids if b in self._banks)

    def contains(self, bank_id: str, key: int) -> bool:
        """Whether ``bank_id``'s index holds ``key``."""
        with self._lock:
            bank = self._banks.get(bank_id)
        return bank is not None and bank.contains(key)

    def total(self) -> int:
        """How many vectors every bank holds together."""
        with self._lock:
            return sum(len(bank) for bank in self._banks.values())

    def add(self, bank_id: str, keys: Sequence[int], vectors: np.ndarray, *, bulk: bool = False) -> None:
        """Index ``vectors`` (one row per key) in ``bank_id``. ``bulk`` (rebuilds) uses every core;
        otherwise one thread, since usearch's per-call thread start-up costs more than a write
        batch gains from it (measured: 3x slower for batches of 500)."""
        if not len(keys):
            return
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        with self._lock:
            bank = self._banks.get(bank_id)
            if bank is None:
                bank = self._banks[bank_id] = _BankIndex(self.dim, self.settings)
        bank.add(np.asarray(keys, dtype=np.uint64), vectors, threads=0 if bulk else 1)

    def remove(self, bank_id: str, keys: Sequence[int]) -> None:
        """Drop ``keys`` from ``bank_id``; the whole bank index goes when nothing live is left."""
        with self._lock:
            bank = self._banks.get(bank_id)
        if bank is None or not len(keys):
            return
        bank.remove(np.asarray(keys, dtype=np.uint64))
        if len(bank) == 0:
            self.drop_bank(bank_id)

    def needs_rebuild(self, bank_id: str) -> bool:
        """True when removals left more dead graph nodes than live ones (search gets slower)."""
        with self._lock:
            bank = self._banks.get(bank_id)
        return bank is not None and bank.tombstones > max(len(bank), self.settings.exact_below)

    def drop_bank(self, bank_id: str) -> None:
        with self._lock:
            self._banks.pop(bank_id, None)

    def search(self, bank_ids: Sequence[str], query: np.ndarray, count: int) -> list[int]:
        """Up to ``count`` nearest chunk keys per bank (unsorted across banks)."""
        with self._lock:
            banks = [self._banks[b] for b in dict.fromkeys(bank_ids) if b in self._banks]
        keys: list[int] = []
        for bank in banks:
            keys.extend(bank.search(query, count).tolist())
        return keys

    def save(self, directory: Path, generation: int) -> None:
        """Snapshot every bank to ``directory`` tagged with the database ``generation``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _MANIFEST).unlink(missing_ok=True)
        with self._lock:
            banks = dict(self._banks)
        files: dict[str, str] = {}
        for number, (bank_id, bank) in enumerate(sorted(banks.items())):
            name = f"bank-{number}.usearch"
            bank.save(directory / name)
            files[bank_id] = name
        for stale in directory.glob("bank-*.usearch"):
            if stale.name not in files.values():
                stale.unlink()
        # The manifest is written last: a crash mid-save leaves no manifest, hence a rebuild.
        manifest = {"generation": generation, "dim": self.dim, "banks": files}
        (directory / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    def load(self, directory: Path, generation: int) -> bool:
        """Load a snapshot saved at exactly ``generation``; False (and nothing loaded) otherwise."""
        try:
            manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("generation") != generation:
                return False
            banks = {
                bank_id: _BankIndex.restore(directory / name, self.settings)
                for bank_id, name in manifest["banks"].items()
            }
        except (OSError, ValueError, KeyError, RuntimeError):
            return False
        with self._lock:
            self._banks = banks
        self.dim = manifest.get("dim")
        return True
