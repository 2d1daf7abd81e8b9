"""The sqlite backend: jobs in one SQLite file that every process on the host may share.

All database work of an instance runs on one dedicated thread with its own connection;
each async verb submits a function to that thread and awaits it, so an instance may be
used from several event loops at once (a worker's loop and ``enqueue_sync``'s). Each verb
is one transaction; writes begin with BEGIN IMMEDIATE, which serializes them across
processes, and a locked file is waited for and retried before StoreError is raised.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, TypeVar

from workhorse.backends.base import (
    FINISHED_STATES,
    AttemptRecord,
    Enqueued,
    EnqueueOutcome,
    Handoff,
    HeartbeatReply,
    JobRecord,
    Limits,
    NewJob,
    QueueStats,
    ResultFeed,
    ScanPage,
    Settlement,
    State,
    WorkerInfo,
)
from workhorse.backends.common import Waiters, refuse_running
from workhorse.backends.sqlite import admin, connection, moves, queries, results, schema
from workhorse.backends.sqlite.connection import callers_connection, in_callers_transaction
from workhorse.errors import StoreError

T = TypeVar("T")

#: How often ``wait_for_work`` asks the file whether another connection committed; after
#: ``_QUIET_AFTER`` seconds in which nothing moved, every ``_QUIET_POLL``. Each look is a hop
#: to the database thread and back, which costs an idle worker more CPU than anything else.
_DATA_VERSION_POLL = 0.05
_QUIET_AFTER = 2.0
_QUIET_POLL = 0.1
#: First and longest pause between two looks at a job that ``wait_finished`` waits for.
_FIRST_POLL = 0.01
_LONGEST_POLL = 0.2


class SqliteBackend:
    """A job store in a SQLite file; see ``Backend`` for what each verb guarantees.

    ``busy_timeout`` is how long SQLite itself waits for another connection's lock, and
    ``busy_retry_for`` how long a move that still finds the file locked is tried again.
    """

    def __init__(self, url: str, *, busy_timeout: float = 5.0,
                 busy_retry_for: float = 30.0) -> None:
        self.url = url
        #: The absolute path of the database file.
        self.path = connection.database_path(url)
        self._busy_timeout = busy_timeout
        self._busy_retry_for = busy_retry_for
        self._lock = threading.Lock()
        self._thread: _DatabaseThread | None = None
        self._work_waiters = Waiters()
        #: Counts this instance's changes that may make work ready (with data_version,
        #: which only counts other connections' commits, it tells a waiter what it missed).
        self._work_epoch = 0
        #: When (time.monotonic) a wait last saw a move or a claim found work.
        self._moved_at = time.monotonic()
        #: Per job id: the Waiters of ``wait_finished`` calls and how many calls use them.
        self._finish_waiters: dict[str, tuple[Waiters, int]] = {}
        #: Counts this instance's finishes, for result feeds (as _work_epoch for work).
        self._finish_epoch = 0

    # -- the database thread -------------------------------------------------------------

    async def open(self) -> None:
        await self._call(lambda conn: None)

    async def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            finishing = [waiters for waiters, _ in self._finish_waiters.values()]
        # Waits in progress end rather than open the store again behind the closer's back.
        for waiters in (self._work_waiters, *finishing):
            waiters.wake_all()
        if thread is not None:
            await thread.stop()

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, reopen: bool = True) -> T:
        """Run ``work`` on the database thread, opening the store first if needed.

        With ``reopen=False`` a closed store stays closed: raises _Closed instead.
        """
        with self._lock:
            if self._thread is None:
                if not reopen:
                    raise _Closed(f"the SQLite store {self.path!r} was closed")
                self._thread = _DatabaseThread(self._connect)
            future = self._thread.submit(work)
        return await asyncio.wrap_future(future)

    def _connect(self) -> sqlite3.Connection:
        retry_for = self._busy_retry_for
        conn = connection.connect(self.path, busy_timeout=self._busy_timeout,
                                  retry_for=retry_for)
        try:
            schema.migrate(conn, schema.bundled_migrations(), retry_for=retry_for)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _write(self, move: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(lambda conn: connection.transaction(
            conn, move, write=True, retry_for=self._busy_retry_for))

    async def _read(self, query: Callable[[sqlite3.Connection], T], *, reopen: bool = True) -> T:
        return await self._call(lambda conn: connection.transaction(
            conn, query, write=False, retry_for=self._busy_retry_for), reopen=reopen)

    async def now(self) -> float:
        # SQLite has no clock of its own: every process on the file reads the host's.
        return time.time()

    # -- producing and consuming ---------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, max_sizes: Mapping[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Enqueued]:
        if connection is not None:
            # The caller's connection belongs to the caller's thread, which runs this
            # coroutine: the inserts run here, in the caller's transaction, uncommitted.
            # Other connections (and processes) see the jobs once the caller commits; their
            # wait_for_work notices the commit through the file's data_version. Until then
            # the caller holds the file's write lock, which every other writer (this
            # instance's thread too) waits for: a caller must not await this store's writes
            # inside that transaction.
            caller = callers_connection(connection, self.path)
            with self._lock:
                opened = self._thread is not None
            if not opened:
                # Our thread migrates the file first. Once open, it is not waited for here:
                # it may be blocked on the very lock the caller holds.
                await self.open()
            results = in_callers_transaction(
                caller, lambda conn: moves.enqueue(conn, jobs, max_sizes))
        else:
            results = await self._write(lambda conn: moves.enqueue(conn, jobs, max_sizes))
        if any(r.outcome is EnqueueOutcome.CREATED for r in results):
            self._work_changed()
        return results

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease: float,
        limits: Mapping[str, Limits] | None = None,
    ) -> list[JobRecord]:
        def move(conn: sqlite3.Connection) -> tuple[list[JobRecord], _Marker]:
            claimed = moves.claim(conn, worker_id, queues, limit, lease, limits or {})
            return claimed, self._marker(conn)

        claimed, marker = await self._write(move)
        _claim_marker.set((self, marker))
        if claimed:
            self._moved_at = time.monotonic()
        return claimed

    # The single moves go through ``settle``: one code path for storing and waking.

    async def ack(self, job_id: str, token: str, *, state: State, status: int,
                  result: bytes | None = None) -> bool:
        if state not in (State.SUCCEEDED, State.CANCELLED):
            raise ValueError(f"ack finishes a job as succeeded or cancelled, not {state}")
        return await self._settle_one(Settlement(job_id, token, state, status, result=result))

    async def retry(self, job_id: str, token: str, *, run_at: float, status: int,
                    error: str | None, traceback: str | None) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.RETRYING, status,
                                                 run_at=run_at, error=error,
                                                 traceback=traceback))

    async def bury(self, job_id: str, token: str, *, status: int, error: str | None,
                   traceback: str | None, keep: bool = True) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.DEAD, status,
                                                 error=error, traceback=traceback, keep=keep))

    async def release(self, job_id: str, token: str) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.READY))

    async def _settle_one(self, settlement: Settlement) -> bool:
        [done] = await self.settle([settlement])
        return done

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        ended = await self._write(lambda conn: moves.settle(conn, settlements))
        # A release or retry of a job whose cancel was asked for finishes it: the state it
        # ended in says so, not the settlement's.
        finished = [s.job_id for s, state in zip(settlements, ended, strict=True)
                    if state in FINISHED_STATES]
        if finished:
            self._jobs_finished(finished)
        done = [state is not None for state in ended]
        if any(done):
            self._work_changed()
        return done

    async def checkin(self, job_id: str, token: str, message: str) -> bool:
        return await self._write(lambda conn: moves.checkin(conn, job_id, token, message))

    # -- control -------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> State | None:
        state = await self._write(lambda conn: moves.cancel(conn, job_id))
        if state is State.CANCELLED:
            self._jobs_finished([job_id])
        return state

    async def cancel_all(self, *, queue: str | None = None, name: str | None = None) -> int:
        count, cancelled = await self._write(lambda conn: moves.cancel_all(conn, queue, name))
        self._jobs_finished(cancelled)
        return count

    async def heartbeat(self, worker: WorkerInfo, job_ids: Sequence[str],
                        lease: float) -> HeartbeatReply:
        reply, beat = await self._write(
            lambda conn: moves.heartbeat(conn, worker, job_ids, lease))
        worker.last_beat = beat
        return reply

    async def unregister(self, worker_id: str) -> None:
        await self._write(lambda conn: moves.unregister(conn, worker_id))

    async def reap(self, worker_ttl: float) -> int:
        requeued, cancelled = await self._write(lambda conn: moves.reap(conn, worker_ttl))
        if cancelled:
            self._jobs_finished(cancelled)
        if requeued or cancelled:
            self._work_changed()
        return requeued

    async def pause(self, queue: str) -> None:
        await self._write(lambda conn: moves.pause(conn, queue))

    async def resume(self, queue: str) -> None:
        await self._write(lambda conn: moves.resume(conn, queue))
        self._work_changed()

    async def prune(self, *, finished_before: float | None = None,
                    keep: int | None = None) -> int:
        return await self._write(lambda conn: moves.prune(conn, finished_before, keep))

    # -- reading -------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._read(lambda conn: queries.get(conn, job_id))

    async def list_jobs(self, *, state: State | None = None, queue: str | None = None,
                        name: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[JobRecord]:
        return await self._read(
            lambda conn: queries.list_jobs(conn, state, queue, name, limit, offset))

    async def queue_stats(self) -> list[QueueStats]:
        return await self._read(queries.queue_stats)

    async def workers(self) -> list[WorkerInfo]:
        return await self._read(queries.workers)

    async def paused(self) -> set[str]:
        return set(await self._read(queries.paused))

    # -- admin ---------------------------------------------------------------------------

    async def count_jobs(self, *, state: State | None = None, queue: str | None = None,
                         name: str | None = None) -> int:
        return await self._read(lambda conn: admin.count_jobs(conn, state, queue, name))

    async def make_ready(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        moved = await self._write(
            lambda conn: admin.make_ready(conn, states, job_id, queue, name, limit))
        if moved:
            self._work_changed()
        return moved

    async def delete_jobs(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        return await self._write(
            lambda conn: admin.delete_jobs(conn, states, job_id, queue, name, limit))

    async def attempt_history(self, job_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        return await self._read(lambda conn: admin.attempt_history(conn, job_ids))

    async def scan(self, *, after: int = 0, limit: int = 500) -> ScanPage:
        return await self._read(lambda conn: admin.scan(conn, after, limit))

    async def restore(
        self, records: Sequence[JobRecord],
        histories: Mapping[str, Sequence[AttemptRecord]] | None = None,
    ) -> list[bool]:
        refuse_running(records)
        done = await self._write(lambda conn: admin.restore(conn, records, histories or {}))
        if any(done):
            self._work_changed()
        return done

    # -- waiting -------------------------------------------------------------------------

    async def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        # SQLite cannot notify other processes, so a job finished elsewhere is seen by
        # polling its row with a growing pause; one finished by this instance wakes the
        # wait at once. Each waiter is registered before the row is read, so a finish
        # between the read and the wait is not missed. Raises StoreError if the store is
        # closed meanwhile.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = _FIRST_POLL
        waiters = self._watch(job_id)
        reopen = True
        try:
            while True:
                waiter = waiters.add()
                record = await self._read(lambda conn: queries.get(conn, job_id), reopen=reopen)
                reopen = False
                done = record is None or record.state.finished
                remaining = deadline - loop.time()
                # A zero wait only unregisters the waiter.
                await waiters.wait(waiter, 0 if done else max(0.0, min(pause, remaining)))
                if done:
                    return record
                if remaining <= 0:
                    return None
                pause = min(pause * 2, _LONGEST_POLL)
        finally:
            self._unwatch(job_id)

    async def wait_for_work(self, queues: Sequence[str], timeout: float, *,
                            handoff: Handoff | None = None) -> list[JobRecord]:
        # Another process cannot wake us, but PRAGMA data_version moves whenever another
        # connection commits, and asking for it costs next to nothing. Many commits bring
        # no work to ``queues`` (heartbeats, other queues), so on a move we look for READY
        # jobs before returning. The first look compares with what this task's last claim
        # saw, if it claimed (a commit since then may bring work the claim could not see);
        # else it only learns when waiting jobs fall due, since the caller has just found
        # nothing it could claim. Closing the store ends the wait.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        claimed = _claim_marker.get()
        seen = claimed[1] if claimed is not None and claimed[0] is self else None
        first = True
        while True:
            waiter = self._work_waiters.add()
            try:
                marker = await self._call(self._marker, reopen=first)
                stop = seen is not None and marker.epoch != seen.epoch
                moved = seen is not None and marker.version != seen.version
                if not stop and (first or moved):
                    ready, due = await self._read(
                        lambda conn: queries.work_ahead(conn, queues), reopen=False)
                    stop = moved and ready
                    if due is not None:
                        deadline = min(deadline, loop.time() + due - time.time())
            except _Closed:
                await self._work_waiters.wait(waiter, 0)  # only unregisters it
                return []
            if stop or moved:
                self._moved_at = time.monotonic()
            seen, first = marker, False
            remaining = deadline - loop.time()
            stop = stop or remaining <= 0
            quiet = time.monotonic() - self._moved_at > _QUIET_AFTER
            poll = _QUIET_POLL if quiet else _DATA_VERSION_POLL
            woken = await self._work_waiters.wait(waiter, 0 if stop else min(poll, remaining))
            if woken:
                self._moved_at = time.monotonic()
            if stop or woken:
                return []

    async def open_result_feed(self) -> ResultFeed:
        # Polls (see results.py): nothing per job for the store, a look every 50 ms for
        # the subscriber while the file changes.
        async def marker() -> tuple[int, int]:
            def read(conn: sqlite3.Connection) -> tuple[int, int]:
                with self._lock:
                    epoch = self._finish_epoch
                return connection.data_version(conn), epoch
            return await self._call(read, reopen=False)

        return await results.open_feed(lambda take: self._read(take, reopen=False),
                                       marker, _Closed)

    def _marker(self, conn: sqlite3.Connection) -> _Marker:
        with self._lock:
            epoch = self._work_epoch
        return _Marker(connection.data_version(conn), epoch)

    def _work_changed(self) -> None:
        with self._lock:
            self._work_epoch += 1
        self._work_waiters.wake_all()

    def _watch(self, job_id: str) -> Waiters:
        with self._lock:
            waiters, count = self._finish_waiters.get(job_id) or (Waiters(), 0)
            self._finish_waiters[job_id] = (waiters, count + 1)
        return waiters

    def _unwatch(self, job_id: str) -> None:
        with self._lock:
            waiters, count = self._finish_waiters[job_id]
            if count > 1:
                self._finish_waiters[job_id] = (waiters, count - 1)
            else:
                del self._finish_waiters[job_id]

    def _jobs_finished(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            self._finish_epoch += 1
            woken = [self._finish_waiters[j][0] for j in job_ids if j in self._finish_waiters]
        for waiters in woken:
            waiters.wake_all()


#: The instance and its marker at the end of this task's last claim (see wait_for_work).
#: A task awaiting ``claim`` shares its context, so it sees what ``claim`` set.
_claim_marker: contextvars.ContextVar[tuple[SqliteBackend, _Marker] | None] = \
    contextvars.ContextVar("workhorse_sqlite_claim_marker", default=None)


class _Closed(StoreError):
    """The store was closed during a wait, which does not open it again."""


class _Marker(NamedTuple):
    """What ``wait_for_work`` compares to learn that something may have changed."""

    #: PRAGMA data_version: moves when another connection commits.
    version: int
    #: This instance's count of changes that may make work ready.
    epoch: int


class _DatabaseThread:
    """The one thread of an open backend, and the connection only that thread uses."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workhorse-sqlite")

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> Future[T]:
        return self._executor.submit(self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return work(self._conn)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def stop(self) -> None:
        """Close the connection once the work already submitted is done; end the thread."""
        try:
            await asyncio.wrap_future(self._executor.submit(self._disconnect))
        finally:
            # The thread is idle by now, so joining it does not hold up the event loop.
            self._executor.shutdown(wait=True)
