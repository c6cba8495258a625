"""The store's single writer thread: group commit, an outcome per write, and a writer that
survives whatever the database does.

Every write is a :class:`Write` queued here. The thread takes everything that arrived
since its last commit (up to ``batch_max``), runs it in one SQLite transaction with a
savepoint around each write, commits once, and only then settles each write: its future
gets the write's result and its ``on_settled`` callback runs. Callers that must answer
"recorded" (an OCPP CALLRESULT, an MQTT PUBACK, an HTTP 201) wait for that future, so
everything that arrived within the same few milliseconds shares one commit.

Two kinds of failure, told apart by SQLite's error code:

* a write SQLite refuses on its own (a constraint, a value it cannot bind): that write
  alone is rolled back to its savepoint and rejected (:class:`WriteRejected`); the rest
  of the batch commits;
* the database itself failing (disk full, I/O error, read-only, locked, corrupt): the
  whole batch is kept, in order, with everything that arrives after it. The store is
  reported unavailable (``failure``), writes whose callers are waiting to answer are
  told so at once (:class:`StoreUnavailable`: they answer "try again") but stay queued,
  and the writer retries with backoff until a commit succeeds; then the store is
  available again by itself. Nothing accepted is dropped.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

# Primary result codes that mean the database, not the write, is at fault.
_SQLITE_STORE_FAILURES = {
    5,   # SQLITE_BUSY
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    8,   # SQLITE_READONLY
    9,   # SQLITE_INTERRUPT
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    26,  # SQLITE_NOTADB
}
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


class StoreUnavailable(Exception):
    """The database cannot commit right now; the write is kept and retried."""


class WriteRejected(Exception):
    """SQLite refused this one write (bad value, constraint); it will never be stored."""


def is_store_failure(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError)
    return (code & 0xFF) in _SQLITE_STORE_FAILURES


class Write:
    """One unit of work: ``run(conn)`` executes its statements and returns its result."""

    __slots__ = ("kind", "run", "count", "future", "on_settled", "fail_fast")

    def __init__(self, kind: str, run: Callable[[sqlite3.Connection], Any], count: int = 1,
                 on_settled: Callable[[bool], None] | None = None,
                 fail_fast: bool = False) -> None:
        self.kind = kind
        self.run = run
        self.count = count
        self.future: Future = Future()
        self.on_settled = on_settled
        self.fail_fast = fail_fast  # its caller waits: tell it at once when the store fails


class _Barrier:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


_STOP = object()
_LATEST = object()  # wakes the thread: coalesced snapshots are waiting


class Writer:
    def __init__(self, conn: sqlite3.Connection, batch_max: int = 2000,
                 idle_work: Callable[[], None] | None = None,
                 idle_every: float = 3600.0) -> None:
        self.conn = conn
        self.batch_max = batch_max
        self.idle_work = idle_work
        self.idle_every = idle_every
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Snapshot rows (one per key, only the newest matters) ride with the next batch.
        self._latest: dict = {}
        self._latest_lock = threading.Lock()
        self.accepted: Counter = Counter()
        self.committed: Counter = Counter()
        self.rejected: Counter = Counter()
        self.batches = 0
        self.failure: str | None = None
        self.failing_since: float | None = None
        self.failed_attempts = 0
        self.backlog = 0  # writes held after a failed commit
        self.unwritten: Counter = Counter()  # what close() could not commit
        # called with the seconds each committed batch took, BEGIN to COMMIT (metrics)
        self.on_commit: Callable[[float], None] | None = None
        self.closing = False
        self._close_deadline = float("inf")
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    # Submitting ---------------------------------------------------------------------
    def submit(self, write: Write) -> Future:
        if self.closing:
            raise RuntimeError("store is closed")
        self.accepted[write.kind] += write.count
        self._queue.put(write)
        return write.future

    def submit_latest(self, key: Any, write: Write) -> None:
        if self.closing:
            raise RuntimeError("store is closed")
        self.accepted[write.kind] += write.count
        with self._latest_lock:
            wake = not self._latest
            replaced = key in self._latest
            self._latest[key] = write
        if replaced:
            self.committed[write.kind] += write.count  # superseded by a newer snapshot
        if wake:
            self._queue.put(_LATEST)

    def barrier(self, timeout: float) -> None:
        """Wait until everything submitted before this call is committed."""
        barrier = _Barrier()
        self._queue.put(barrier)
        if not barrier.event.wait(timeout):
            if self.failure:
                raise StoreUnavailable(self.failure)
            raise TimeoutError("store writer did not catch up")

    def close(self, timeout: float) -> Counter:
        """Commit what is queued (retrying up to `timeout` if the database fails), stop
        the thread; returns the writes by kind that could not be committed."""
        if not self.closing:
            self.closing = True
            self._close_deadline = time.monotonic() + timeout
            self._queue.put(_STOP)
        self._thread.join(timeout + 30)
        return self.unwritten

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() + self.backlog

    # The thread ---------------------------------------------------------------------
    def _collect(self, block: float | None) -> tuple[list, list, bool]:
        writes: list[Write] = []
        barriers: list[_Barrier] = []
        stop = False
        try:
            item = self._queue.get(timeout=block) if block else self._queue.get_nowait()
        except queue.Empty:
            return writes, barriers, stop
        while True:
            if item is _STOP:
                stop = True
            elif isinstance(item, _Barrier):
                barriers.append(item)
            elif item is not _LATEST:
                writes.append(item)
            if len(writes) >= self.batch_max:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return writes, barriers, stop

    def _take_latest(self) -> list[Write]:
        with self._latest_lock:
            items, self._latest = self._latest, {}
        return list(items.values())

    def _loop(self) -> None:
        held: list[Write] = []          # kept after a failed commit, in order
        held_barriers: list[_Barrier] = []
        stopping = False
        delay = 0.0
        next_idle = time.monotonic() + self.idle_every
        while True:
            if held:
                # Back off between attempts; new writes join the held batch meanwhile.
                wait = min(delay, max(0.0, self._close_deadline - time.monotonic()))
                time.sleep(wait)
                writes, barriers, stop = self._collect(None)
            else:
                writes, barriers, stop = self._collect(1.0)
            stopping = stopping or stop
            # Snapshots ride only with a batch that drained the queue: a snapshot must never
            # commit before the rows it accounts for (queued before it).
            latest = self._take_latest() if len(writes) < self.batch_max else []
            batch = held + writes + latest
            barriers = held_barriers + barriers
            if batch and not self._commit(batch):
                held, held_barriers = batch, barriers
                self.backlog = len(held)
                delay = min(max(delay * 2, RETRY_FIRST_SECONDS), RETRY_MAX_SECONDS)
                if stopping and time.monotonic() >= self._close_deadline:
                    for write in held:
                        self.unwritten[write.kind] += write.count
                        if not write.future.done():
                            write.future.set_exception(StoreUnavailable("store closed"))
                    for barrier in barriers:
                        barrier.event.set()
                    return
                continue
            held, held_barriers, self.backlog, delay = [], [], 0, 0.0
            for barrier in barriers:
                barrier.event.set()
            if stopping and self._queue.empty() and not self._latest:
                return
            if self.idle_work is not None and time.monotonic() >= next_idle:
                next_idle = time.monotonic() + self.idle_every
                try:
                    self.idle_work()
                except sqlite3.Error:
                    log.exception("store maintenance failed")

    def _commit(self, batch: list[Write]) -> bool:
        conn = self.conn
        outcomes: list[tuple[Write, bool, Any]] = []
        started = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                conn.execute("SAVEPOINT w")
                try:
                    result = write.run(conn)
                except Exception as exc:
                    if is_store_failure(exc):
                        raise
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((write, False, exc))
                else:
                    outcomes.append((write, True, result))
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except Exception as exc:
            if not is_store_failure(exc):
                log.exception("unexpected error in the store writer")
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may already have rolled the transaction back
            self._failed(exc, batch)
            return False
        self.batches += 1
        if self.on_commit is not None:
            try:  # an observer's failure must never stop the writer
                self.on_commit(time.monotonic() - started)
            except Exception:
                log.exception("store: the commit observer failed")
        if self.failure is not None:
            log.warning("store writable again after %.1f s and %d failed attempts; "
                        "%d held writes committed", time.monotonic() - self.failing_since,
                        self.failed_attempts, len(batch))
            self.failure = self.failing_since = None
            self.failed_attempts = 0
        for write, ok, value in outcomes:
            if ok:
                self.committed[write.kind] += write.count
                if not write.future.done():
                    write.future.set_result(value)
            else:
                self.rejected[write.kind] += write.count
                log.warning("store refused a %s write: %s", write.kind, value)
                if not write.future.done():
                    write.future.set_exception(WriteRejected(f"{write.kind}: {value}"))
            self._run_callback(write, ok)
        return True

    def _failed(self, exc: BaseException, batch: list[Write]) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.failed_attempts += 1
        if self.failure is None:
            self.failing_since = time.monotonic()
            log.error("store cannot commit (%s); %d writes held and retried until it can",
                      reason, len(batch))
        elif self.failed_attempts % 100 == 0:
            log.error("store still cannot commit after %d attempts (%s); %d writes held",
                      self.failed_attempts, reason, len(batch))
        self.failure = reason
        for write in batch:
            if write.fail_fast and not write.future.done():
                write.future.set_exception(StoreUnavailable(reason))

    @staticmethod
    def _run_callback(write: Write, ok: bool) -> None:
        if write.on_settled is None:
            return
        try:
            write.on_settled(ok)
        except Exception:  # a failing acknowledgement must not stop the writer
            log.exception("store write callback failed")
