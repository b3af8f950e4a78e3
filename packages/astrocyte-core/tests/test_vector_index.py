"""The SQLite store's vector index: writes queue vectors for a background indexer thread, and a
queued vector is searchable (scored exactly) before it reaches the graph."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astrocyte.stores import _vector_index
from astrocyte.stores._vector_index import IndexSettings, Snapshot, VectorIndex

DIM = 16


def _vectors(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


@pytest.fixture
def index() -> Iterator[VectorIndex]:
    made = VectorIndex(IndexSettings(exact_below=8))
    yield made
    made.close()


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold the indexer thread before it moves anything into a graph until the event is set."""
    gate = threading.Event()
    original = _vector_index._BankIndex.index_some

    def held(self: _vector_index._BankIndex, limit: int) -> int:
        gate.wait(10)
        return original(self, limit)

    monkeypatch.setattr(_vector_index._BankIndex, "index_some", held)
    yield gate
    gate.set()


def test_a_queued_vector_is_found_before_the_graph_holds_it(
    index: VectorIndex, paused: threading.Event
) -> None:
    vectors = _vectors(50)
    index.add("bank", list(range(1, 51)), vectors)
    assert index.size(["bank"]) == 50
    assert index.contains("bank", 7)
    assert 7 in index.search(["bank"], vectors[6], 3)
    paused.set()
    index.flush()
    assert 7 in index.search(["bank"], vectors[6], 3)
    assert index.size(["bank"]) == 50


def test_search_spans_graph_and_queue(index: VectorIndex, paused: threading.Event) -> None:
    vectors = _vectors(40)
    paused.set()
    index.add("bank", list(range(1, 21)), vectors[:20])
    index.flush()
    paused.clear()
    index.add("bank", list(range(21, 41)), vectors[20:])
    found = index.search(["bank"], vectors[2], 2) + index.search(["bank"], vectors[30], 2)
    assert {3, 31} <= set(found)


def test_graph_and_queue_are_ranked_together(paused: threading.Event) -> None:
    # A caller widens count until enough candidates pass its filters, so the candidates must come
    # nearest first across graph and queue, not the best of each side concatenated.
    index = VectorIndex(IndexSettings(exact_below=10_000, dtype="f32"))
    query = _vectors(1, 9)[0]
    rng = np.random.default_rng(5)
    vectors = np.stack([query + rng.standard_normal(DIM).astype(np.float32) * (0.1 * i) for i in range(40)])
    order = list(range(1, 41))  # key i + 1 is the i-th nearest (noise grows with i)
    paused.set()
    index.add("bank", order[0::2], vectors[0::2])  # even ranks into the graph
    index.flush()
    paused.clear()
    index.add("bank", order[1::2], vectors[1::2])  # odd ranks wait in the queue
    distances = 1 - (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = [order[i] for i in np.argsort(distances)[:10]]
    assert index.search(["bank"], query, 10) == expected
    paused.set()
    index.close()


def test_removing_queued_keys_drops_them_from_search_and_the_count(
    index: VectorIndex, paused: threading.Event
) -> None:
    vectors = _vectors(10)
    index.add("bank", list(range(1, 11)), vectors)
    index.remove("bank", [4, 5])
    assert index.size(["bank"]) == 8
    assert 4 not in index.search(["bank"], vectors[3], 10)
    paused.set()
    index.flush()  # returns: the removed keys are no longer counted as queued
    assert index.size(["bank"]) == 8


def test_dropping_a_bank_with_queued_vectors_leaves_nothing_to_wait_for(
    index: VectorIndex, paused: threading.Event
) -> None:
    index.add("gone", [1, 2, 3], _vectors(3))
    index.drop_bank("gone")
    paused.set()
    index.flush()
    assert index.total() == 0


def test_a_writer_waits_while_the_queue_is_full(paused: threading.Event) -> None:
    index = VectorIndex(IndexSettings(max_queued=10))
    index.add("bank", list(range(1, 11)), _vectors(10))
    second = threading.Thread(target=index.add, args=("bank", list(range(11, 21)), _vectors(10, 2)))
    second.start()
    time.sleep(0.2)
    assert second.is_alive()  # blocked on the full queue
    assert index.size(["bank"]) == 10
    paused.set()
    second.join(10)
    assert not second.is_alive()
    index.close()
    assert index.size(["bank"]) == 20


def test_a_snapshot_holds_queued_vectors(tmp_path: Path, paused: threading.Event) -> None:
    index = VectorIndex(IndexSettings())
    vectors = _vectors(30)
    index.add("bank", list(range(1, 31)), vectors)
    paused.set()
    index.save(tmp_path, Snapshot("file", 5, 30))
    index.close()
    restored = VectorIndex(IndexSettings())
    assert restored.load(tmp_path, Snapshot("other file", 5, 30)) is None
    assert restored.load(tmp_path, Snapshot("file", 4, 30)) is None  # the file is older than the snapshot
    assert restored.load(tmp_path, Snapshot("file", 7, 40)) == Snapshot("file", 5, 30)
    assert restored.size(["bank"]) == 30
    assert 12 in restored.search(["bank"], vectors[11], 1)


def test_an_index_the_graph_refuses_is_logged_not_fatal(
    index: VectorIndex, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    index.add("bank", [1], _vectors(1))
    index.flush()
    bank = index._banks["bank"]
    monkeypatch.setattr(bank._index, "add", refuse)
    index.add("bank", [2, 3], _vectors(2, 3))
    index.flush()  # returns: the refused slice left the queue
    assert "could not index 2 vectors" in caplog.text
    index.add("other", [4], _vectors(1, 4))  # the indexer thread is still serving
    index.flush()
    assert index.search(["other"], _vectors(1, 4)[0], 1) == [4]
