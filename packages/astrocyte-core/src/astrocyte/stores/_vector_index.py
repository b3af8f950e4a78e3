"""In-memory approximate-nearest-neighbour index for the SQLite store: one usearch HNSW per bank.

Why one index per bank rather than one shared index with a bank filter: a search never walks other
tenants' vectors, so ``k`` needs no over-fetch to survive bank filtering; ``delete_bank`` is just
dropping an object; and a small bank (most of them, one per user) is searched exactly instead of
through a graph. Multi-bank search queries each named bank and merges.

Writes do not wait for the graph. Adding a vector to an HNSW graph costs tens of microseconds,
as much as the SQLite row itself, so a write only queues its vectors (:meth:`VectorIndex.add`) and
an indexer thread moves them into the graph in small slices (usearch releases the GIL, so this runs
beside the next write on another core). Until a vector reaches the graph, searches score it exactly
from the queue: a write is searchable the moment it returns. The queue is bounded; a writer that
outruns the indexer waits for it.

The index is a cache of the chunk vectors stored as BLOBs in SQLite, keyed by chunk rowid. It may
hold keys whose rows were just deleted (the caller re-reads hits from SQLite, which drops them);
it never invents vectors. A snapshot of every bank can be saved beside the database and reloaded,
then brought up to date with the chunks written since (see :meth:`VectorIndex.save` /
:meth:`VectorIndex.load`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

_MANIFEST = "manifest.json"
# Vectors the indexer moves into a graph per hold of the graph lock, which the bank's searches
# wait for: a search waits up to one slice. The trade is search wait against indexer bookkeeping:
# usearch's insert cost is per vector whatever the batch (measured here, 384 dims into a 20k graph:
# 0.3-0.6 ms a vector in batches of 1 to 256), so a slice costs the indexer only ~5 us of locks
# and queue updates on top. At 64 a search during a bulk fill waited a median 15-18 ms, at 16
# 4-5 ms, for a fill rate no different beyond noise. Much smaller slices would make that
# bookkeeping and the writers woken after each slice count.
_SLICE = 16
# Graphs of this size search with the configured beam width; others scale it (expansion_for).
_ADAPT_FROM = 100_000
_MAX_EXPANSION = 4096
# Distances this close to the nearest one tie with it. Vectors that differ below i8 resolution get
# one code, so their quantised distances are equal, and a search cut at ``count`` keeps an
# arbitrary part of them: perhaps not the stored copy of the query. Two i8 codes that differ at
# all are at least ~3e-5 apart in cosine distance; float32 rounding of an exact one is ~1e-7.
_TIE = 1e-6
# Vectors tied with the nearest one that a search returns beyond ``count`` at most. The caller
# re-reads and rescores every candidate: with 300 tied copies in a 4k bank (384 dims) a vector
# search took ~2-3 ms instead of ~0.8 ms; searches without ties pay one comparison.
_MAX_TIED = 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What an index snapshot reflects: the database file (its random id), its write generation,
    and the newest chunk id every earlier one of which was indexed."""

    file_id: str
    generation: int
    synced_id: int

    def precedes(self, current: Snapshot) -> bool:
        """Whether a snapshot of this state can be brought up to ``current`` by indexing the chunks
        written since (ids above ``synced_id``: chunk ids only grow, chunks never change) and
        dropping those deleted since."""
        return (
            self.file_id == current.file_id
            and self.generation <= current.generation
            and self.synced_id <= current.synced_id
        )


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """HNSW tuning: graph degree, build and search beam widths, vector storage type, the bank
    size up to which search is exact (brute force) instead of through the graph, and how many
    vectors may wait for the graph before writers wait for the indexer."""

    connectivity: int = 16
    expansion_add: int = 40
    expansion_search: int = 256
    dtype: str = "i8"
    exact_below: int = 4096
    # Small enough that scoring the whole queue exactly stays under a millisecond, and that a
    # backlog's throughput is the indexer's sustained rate, not the queue absorbing a burst.
    max_queued: int = 4096


def expansion_for(base: int, size: int) -> int:
    """The search beam width for a graph of ``size`` vectors: ``base`` at 100k vectors, growing
    and shrinking with the fourth root of the size (x0.56 at 10k, x1.33 at 300k, x1.78 at 1M),
    never below half of ``base``.

    Measured on tie-free 384-dim vectors shaped like text embeddings (i8 graph, degree 16, 60
    candidates rescored exactly): recall@10 against exact search is 0.9935 / 0.9985 / 0.9955 at
    8k / 12k / 24k with a beam of 128 (256: 0.995 / 0.9995 / 1.0, for twice the time: 0.77 vs
    0.44 ms at 8k, 1.26 vs 0.63 ms at 24k); at 300k it is 0.963 / 0.9945 / 0.998 with 128 / 256 /
    384. The beam a fixed recall needs grows slowly with the graph, and search time grows with the
    beam, so it grows no faster, and a small graph does not pay a large one's beam."""
    return min(_MAX_EXPANSION, max(base // 2, round(base * (size / _ADAPT_FROM) ** 0.25)))


class _BankIndex:
    """One bank's HNSW graph plus the vectors queued for it.

    Two locks, always taken graph first: the graph lock serialises graph mutation against search
    (usearch removal is not documented as safe concurrently with search) and is held while the
    indexer moves a slice from the queue into the graph, so a search sees each vector in exactly
    one of the two; the queue lock only guards the list, so a writer queueing never waits for a
    graph insert."""

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
        self._expansion = settings.expansion_search
        self._index.expansion_search = self._expansion  # type: ignore[misc]  # has a setter at runtime
        self._graph_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        # Queued slices, oldest first: keys and their float32 rows scaled to unit length (so exact
        # scoring is one product). Writers only append; only holders of the graph lock change the head.
        self._queue: list[tuple[np.ndarray, np.ndarray]] = []
        self.queued = 0
        self.tombstones = 0

    def __len__(self) -> int:
        return len(self._index) + self.queued

    @property
    def searched_exactly(self) -> bool:
        """Whether a search scores every vector (a graph no larger than ``exact_below``; the queue
        always is), so nothing stored can be passed by."""
        return len(self._index) <= self._settings.exact_below

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        """Put vectors straight into the graph (rebuilds and catch-up, not the write path)."""
        with self._graph_lock:
            self._index.add(keys, vectors, threads=threads)

    def enqueue(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        rows = np.asarray(vectors, dtype=np.float32)
        units = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        with self._queue_lock:
            self._queue.append((keys, units))
            self.queued += len(keys)

    def index_some(self, limit: int) -> int:
        """Move up to ``limit`` of the oldest queued vectors into the graph; returns how many left
        the queue. Should usearch refuse them, they are logged and dropped: their rows stay in
        the file, keyword search still finds them, and the next rebuild indexes them."""
        with self._graph_lock:
            with self._queue_lock:
                if not self._queue:
                    return 0
                keys, rows = self._queue[0]
            keys, rows = keys[:limit], rows[:limit]
            try:
                self._index.add(keys, rows, threads=1)
            except Exception:  # the indexer thread must outlive one bad slice
                logger.exception("could not index %d vectors; they wait for the next rebuild", len(keys))
            with self._queue_lock:
                head, head_rows = self._queue[0]
                if len(head) > len(keys):
                    self._queue[0] = (head[len(keys) :], head_rows[len(keys) :])
                else:
                    self._queue.pop(0)
                self.queued -= len(keys)
            return len(keys)

    def clear_queue(self) -> int:
        """Forget every queued vector; returns how many there were."""
        with self._graph_lock, self._queue_lock:
            dropped, self._queue, self.queued = self.queued, [], 0
            return dropped

    def contains(self, key: int) -> bool:
        with self._graph_lock, self._queue_lock:
            return key in self._index or any(bool((keys == key).any()) for keys, _ in self._queue)

    def remove(self, keys: np.ndarray) -> int:
        """Drop ``keys`` from the graph and the queue; returns how many left the queue."""
        with self._graph_lock, self._queue_lock:
            self.tombstones += int(self._index.remove(keys))
            dequeued = 0
            for position, (queued, rows) in enumerate(self._queue):
                keep = ~np.isin(queued, keys)
                if not keep.all():
                    dequeued += int(len(queued) - keep.sum())
                    self._queue[position] = (queued[keep], rows[keep])
            self.queued -= dequeued
            return dequeued

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        """Up to ``count`` nearest keys, nearest first, from the graph and the queue together (one
        ranking by cosine distance, so a caller widening ``count`` sees candidates in order), and
        past them any more that tie with the nearest (see ``_TIE``): the caller's exact rescoring
        then sees the query's own vector among its copies."""
        with self._graph_lock:
            size = len(self._index)
            if size:
                exact = self.searched_exactly
                expansion = expansion_for(self._settings.expansion_search, size)
                if expansion != self._expansion:
                    self._index.expansion_search = expansion  # type: ignore[misc]  # has a setter at runtime
                    self._expansion = expansion
                keys, distances = self._search_graph(query, count, size, exact)
            else:
                keys, distances = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
            with self._queue_lock:
                queue = list(self._queue)
        if not queue:
            return keys
        queued_keys, queued_distances = _nearest_queued(queue, query, count)
        keys = np.concatenate([keys, queued_keys])
        distances = np.concatenate([distances, queued_distances])
        order = np.argsort(distances, kind="stable")
        return keys[order[: _with_ties(distances[order], count)]]

    def _search_graph(
        self, query: np.ndarray, count: int, size: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The graph's nearest ``count`` keys and distances, plus every key tied with the nearest
        (up to ``_MAX_TIED`` more): while the last one found still ties, search wider."""
        wanted, widest = min(count, size), min(size, count + _MAX_TIED)
        while True:
            # One thread: the caller is already a worker thread; usearch's own pool costs more.
            matches = self._index.search(query, wanted, exact=exact, threads=1)
            distances = np.asarray(matches.distances, dtype=np.float32)
            if wanted >= widest or not len(distances) or distances[-1] > distances[0] + _TIE:
                break
            # Step by step: an exact search's cost grows with the count too (at 4k vectors, 384
            # dims: ~250 us for 20, ~400 for 80, ~800 for 1,044), and most ties are just past it.
            wanted = min(widest, 4 * wanted)
        keep = _with_ties(distances, count)
        return np.asarray(matches.keys, dtype=np.uint64)[:keep], distances[:keep]

    def keys(self) -> np.ndarray:
        """Every key in the graph (queued ones excluded)."""
        with self._graph_lock:
            return np.asarray(self._index.keys, dtype=np.uint64)

    def save(self, path: Path) -> None:
        with self._graph_lock:
            self._index.save(str(path))

    @classmethod
    def restore(cls, path: Path, settings: IndexSettings) -> _BankIndex:
        index = Index.restore(str(path))
        if index is None:
            raise ValueError(f"unreadable index snapshot {path}")
        return cls(index.ndim, settings, index)


def _with_ties(distances: np.ndarray, count: int) -> int:
    """How many of the ascending ``distances`` to keep: the first ``count``, and past them those
    tied with the nearest (at most ``_MAX_TIED`` more)."""
    if len(distances) <= count or distances[count] > distances[0] + _TIE:
        return count
    tied = int(np.searchsorted(distances, distances[0] + _TIE, side="right"))
    return min(tied, count + _MAX_TIED)


def _nearest_queued(
    queue: list[tuple[np.ndarray, np.ndarray]], query: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` queued keys nearest to ``query``, or all those tied with the nearest when they
    are more, and their cosine distances, scored exactly (in no particular order)."""
    keys = np.concatenate([keys for keys, _ in queue])
    unit_query = query / max(float(np.linalg.norm(query)), 1e-12)
    distances = (1.0 - np.concatenate([rows @ unit_query for _, rows in queue])).astype(np.float32)
    if len(keys) > count:
        nearest = np.argpartition(distances, count - 1)[:count]
        best = distances[nearest].min()
        if distances[nearest].max() <= best + _TIE:  # all tie: so may more
            nearest = np.flatnonzero(distances <= best + _TIE)
        keys, distances = keys[nearest], distances[nearest]
    return keys, distances


class VectorIndex:
    """Every bank's index, created on first use, and the indexer thread filling their graphs.
    Thread-safe: the store's writer thread adds and removes while reader threads search."""

    def __init__(self, settings: IndexSettings) -> None:
        self.settings = settings
        self.dim: int | None = None
        self._banks: dict[str, _BankIndex] = {}
        self._lock = threading.Lock()
        # Guards the indexer's work list: banks with queued vectors, in round-robin order.
        self._work = threading.Condition()
        self._dirty: dict[str, _BankIndex] = {}
        self._queued = 0
        self._indexer: threading.Thread | None = None
        self._stopping = False

    def size(self, bank_ids: Iterable[str]) -> int:
        """How many vectors the named banks hold together (queued ones included)."""
        with self._lock:
            return sum(len(self._banks[b]) for b in bank_ids if b in self._banks)

    def searched_exactly(self, bank_ids: Iterable[str]) -> bool:
        """Whether a search of these banks scores every vector they hold."""
        with self._lock:
            return all(self._banks[b].searched_exactly for b in bank_ids if b in self._banks)

    def contains(self, bank_id: str, key: int) -> bool:
        """Whether ``bank_id``'s index holds ``key`` (in its graph or queued for it)."""
        with self._lock:
            bank = self._banks.get(bank_id)
        return bank is not None and bank.contains(key)

    def total(self) -> int:
        """How many vectors every bank holds together."""
        with self._lock:
            return sum(len(bank) for bank in self._banks.values())

    def _bank(self, bank_id: str, dim: int) -> _BankIndex:
        if self.dim is None:
            self.dim = dim
        with self._lock:
            bank = self._banks.get(bank_id)
            if bank is None:
                bank = self._banks[bank_id] = _BankIndex(self.dim, self.settings)
            return bank

    def add(self, bank_id: str, keys: Sequence[int], vectors: np.ndarray, *, bulk: bool = False) -> None:
        """Index ``vectors`` (one row per key) in ``bank_id``: searchable when this returns.

        Writes queue them for the indexer thread (waiting first while the queue is full). ``bulk``
        (rebuilds) puts them straight into the graph using every core."""
        if not len(keys):
            return
        bank = self._bank(bank_id, int(vectors.shape[1]))
        array = np.asarray(keys, dtype=np.uint64)
        if bulk:
            bank.add(array, vectors, threads=0)
            return
        with self._work:
            indexer = self._start_indexer()
            while self._queued >= self.settings.max_queued and indexer.is_alive():
                self._work.wait()
        bank.enqueue(array, vectors)
        with self._work:
            self._queued += len(array)
            self._dirty[bank_id] = bank
            self._work.notify_all()

    def remove(self, bank_id: str, keys: Sequence[int]) -> None:
        """Drop ``keys`` from ``bank_id``; the whole bank index goes when nothing live is left."""
        with self._lock:
            bank = self._banks.get(bank_id)
        if bank is None or not len(keys):
            return
        dequeued = bank.remove(np.asarray(keys, dtype=np.uint64))
        self._settle(dequeued)
        if len(bank) == 0:
            self.drop_bank(bank_id)

    def needs_rebuild(self, bank_id: str) -> bool:
        """True when removals left more dead graph nodes than live ones (search gets slower)."""
        with self._lock:
            bank = self._banks.get(bank_id)
        return bank is not None and bank.tombstones > max(len(bank), self.settings.exact_below)

    def drop_bank(self, bank_id: str) -> None:
        with self._lock:
            bank = self._banks.pop(bank_id, None)
        if bank is not None:
            with self._work:
                if self._dirty.get(bank_id) is bank:
                    del self._dirty[bank_id]
            self._settle(bank.clear_queue())

    def search(self, bank_ids: Sequence[str], query: np.ndarray, count: int) -> list[int]:
        """Up to ``count`` nearest chunk keys per bank, more where they tie with the nearest
        (unsorted across banks)."""
        with self._lock:
            banks = [self._banks[b] for b in dict.fromkeys(bank_ids) if b in self._banks]
        keys: list[int] = []
        for bank in banks:
            keys.extend(bank.search(query, count).tolist())
        return keys

    # -- the indexer thread ------------------------------------------------------------------------

    def _start_indexer(self) -> threading.Thread:
        """The indexer thread, started if it is not running (caller holds ``_work``)."""
        if self._indexer is None or not self._indexer.is_alive():
            self._stopping = False
            self._indexer = threading.Thread(target=self._run_indexer, name="astrocyte-indexer", daemon=True)
            self._indexer.start()
        return self._indexer

    def _settle(self, moved: int) -> None:
        """Account for ``moved`` vectors leaving the queue, and wake whoever waits on that."""
        if moved:
            with self._work:
                self._queued -= moved
                self._work.notify_all()

    def _run_indexer(self) -> None:
        while True:
            with self._work:
                while not self._dirty and not self._stopping:
                    self._work.wait()
                if not self._dirty:
                    return
                bank_id, bank = next(iter(self._dirty.items()))
                del self._dirty[bank_id]
                self._dirty[bank_id] = bank  # to the back: banks take turns
            moved = bank.index_some(_SLICE)
            with self._work:
                self._queued -= moved
                if bank.queued == 0 and self._dirty.get(bank_id) is bank:
                    del self._dirty[bank_id]
                self._work.notify_all()

    def flush(self) -> None:
        """Wait until every queued vector is in its graph."""
        with self._work:
            while self._queued > 0 and self._indexer is not None and self._indexer.is_alive():
                self._work.wait()

    def close(self) -> None:
        """Finish the queue and stop the indexer thread."""
        self.flush()
        with self._work:
            self._stopping = True
            self._work.notify_all()
            indexer, self._indexer = self._indexer, None
        if indexer is not None:
            indexer.join()

    def bank_keys(self) -> dict[str, np.ndarray]:
        """Every bank's graph keys (after the queue has reached the graphs)."""
        self.flush()
        with self._lock:
            banks = dict(self._banks)
        return {bank_id: bank.keys() for bank_id, bank in banks.items()}

    def save(self, directory: Path, snapshot: Snapshot) -> None:
        """Snapshot every bank to ``directory``, described by ``snapshot`` (after the queue has
        reached the graphs: snapshots hold graphs only)."""
        self.flush()
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
        manifest = {**asdict(snapshot), "dim": self.dim, "banks": files}
        (directory / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    def load(self, directory: Path, current: Snapshot) -> Snapshot | None:
        """Load the snapshot in ``directory`` if it can be brought up to ``current`` (the file as it
        is now): the same file, no newer than it. Returns what the snapshot reflects; None (and
        nothing loaded) when there is none to use."""
        try:
            manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
            saved = Snapshot(manifest["file_id"], int(manifest["generation"]), int(manifest["synced_id"]))
            if not saved.precedes(current):
                return None
            banks = {
                bank_id: _BankIndex.restore(directory / name, self.settings)
                for bank_id, name in manifest["banks"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None
        with self._lock:
            self._banks = banks
        self.dim = manifest.get("dim")
        return saved
