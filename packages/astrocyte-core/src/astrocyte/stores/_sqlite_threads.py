"""The SQLite store's threads: one writer thread owning the writer connection, and a small pool
of reader threads each holding its own connection.

The single writer serialises writes (so an idempotency check and its insert cannot race another
write of this process); ``BEGIN IMMEDIATE`` takes the file's write lock up front so they cannot race
another process either. Readers run WAL snapshots concurrently with the writer.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from astrocyte.errors import ProviderUnavailableError
from astrocyte.stores._sqlite_schema import connect
from astrocyte.stores._sqlite_search import READER_SETUP

__all__ = ["SQLiteThreads"]

T = TypeVar("T")

_WRITER_CACHE_KIB = 32_768
# How often a writer waiting for another process's write lock tries again (first, at most).
_LOCK_POLL_FIRST_S = 0.0005
_LOCK_POLL_MAX_S = 0.004
_READER_CACHE_KIB = 8_192
# Readers map the file: a page read is no copy out of the OS cache (measured: ~12% less CPU per
# recall). It is address space, not private memory, though touched pages count in the RSS.
_READER_MMAP_MIB = 1024


class SQLiteThreads:
    """Runs functions on the writer thread (``write``) or on a reader thread with a connection of
    its own (``read``), awaiting them from the event loop."""

    def __init__(self, path: Path, busy_timeout_ms: int, readers: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._reader_count = readers
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        # Vector index searches a reader starts beside its own SQL (see _sqlite_search.search_ahead);
        # none on one CPU, where running them beside would only add a thread hop.
        self.searcher: ThreadPoolExecutor | None = None
        self.writer: sqlite3.Connection | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._reader_conns: list[sqlite3.Connection] = []

    @property
    def running(self) -> bool:
        return self._writer_pool is not None

    def start(self) -> None:
        """Start the thread pools (connections are opened on them, see ``connect_*``)."""
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="astrocyte-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(
            self._reader_count, thread_name_prefix="astrocyte-sqlite-reader"
        )
        if (os.cpu_count() or 1) > 1:
            self.searcher = ThreadPoolExecutor(
                self._reader_count, thread_name_prefix="astrocyte-index-search"
            )

    def connect_writer(self) -> sqlite3.Connection:
        """Open the writer connection (on the writer thread)."""
        self.writer = connect(self._path, self._busy_timeout_ms, _WRITER_CACHE_KIB)
        return self.writer

    def connect_readers(self) -> None:
        """Open one connection per reader thread (after the schema exists)."""
        for _ in range(self._reader_count):
            conn = connect(self._path, self._busy_timeout_ms, _READER_CACHE_KIB, _READER_MMAP_MIB)
            conn.execute(READER_SETUP)
            self._reader_conns.append(conn)
            self._readers.put(conn)

    def close_connections(self) -> None:
        """Close every connection (on the writer thread, once nothing else runs)."""
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        self._readers = queue.SimpleQueue()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def stop(self) -> None:
        """Wait for queued work and stop the threads."""
        for pool in (self._writer_pool, self._reader_pool, self.searcher):
            if pool is not None:
                pool.shutdown(wait=True)
        self._writer_pool = self._reader_pool = self.searcher = None

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the writer thread."""
        if self._writer_pool is None:
            raise ProviderUnavailableError("the SQLite store is not open; call open() first")
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on a reader thread, in one read transaction of a reader connection."""
        if self._reader_pool is None:
            raise ProviderUnavailableError("the SQLite store is not open; call open() first")
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, self._with_reader, fn, args
        )

    def _with_reader(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._readers.get()
        try:
            # One read transaction: every statement of ``fn`` sees the same snapshot, so ids one
            # statement returns still exist for the next (and the WAL lock is taken once).
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        finally:
            self._readers.put(conn)

    def _lock_file(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting up to the busy timeout for another process's write lock.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so behind a
        busy writer a transaction waits long after the lock was free: two gateway workers
        retaining into one file had a p99 of 0.5-1 s. Polling every 0.5-4 ms instead takes the
        lock within a few ms of its release (the handler is off only for this statement)."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = _LOCK_POLL_FIRST_S
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, _LOCK_POLL_MAX_S)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE on the writer connection: takes the write lock up front, so a
        read-then-write (idempotency check, then insert) cannot interleave with another writer."""
        conn = self.writer
        assert conn is not None
        self._lock_file(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY)."""
    return exc.sqlite_errorcode == sqlite3.SQLITE_BUSY
