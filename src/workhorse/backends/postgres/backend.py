"""The postgres backend: jobs in a PostgreSQL schema shared by every process and host.

Each verb is one round trip and one transaction on a pooled connection in autocommit
mode; the moves of several steps are PL/pgSQL functions of the schema. Moves that may make
work ready or finish a job NOTIFY the schema's channel, so ``wait_for_work`` and
``wait_finished`` wake within milliseconds of a change made by any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from workhorse import codec
from workhorse.backends.base import (
    HISTORY_LIMIT,
    WORKER_LOST,
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
from workhorse.backends.common import history_from_items, history_to_json, new_token, refuse_running
from workhorse.backends.postgres import admin, config, results, schema
from workhorse.backends.postgres.connections import Listener, LoopConnections, store_errors
from workhorse.backends.postgres.outbox import Params, callers_connection, in_callers_transaction
from workhorse.backends.postgres.statements import NOW, ResultStatements, Statements, record
from workhorse.errors import ConfigurationError, StoreError
from workhorse.status import Status

#: The listener and its count of work notifications when this task last began a claim;
#: ``wait_for_work`` returns at once if work was notified since (the claim may have missed
#: it). A task awaiting ``claim`` shares its context, so it sees what ``claim`` set.
_claim_mark: contextvars.ContextVar[tuple[Listener, int] | None] = contextvars.ContextVar(
    "workhorse_postgres_claim_mark", default=None)

#: The states a run may end in, each naming its move (see ``Settlement``).
_SETTLED_AS = frozenset({State.SUCCEEDED, State.CANCELLED, State.RETRYING, State.DEAD,
                         State.READY})


class PostgresBackend:
    """A job store in a PostgreSQL schema; see ``Backend`` for what each verb guarantees.

    ``postgresql://user:password@host:5432/dbname?schema=workhorse&migrate=true``: all
    tables live in ``schema``; with ``migrate=false``, ``open`` refuses a schema that is
    missing or behind instead of migrating it (run ``workhorse migrate URL``). Other query
    parameters go to libpq. Connecting gives up after ``connect_timeout`` seconds; each
    event loop that uses the instance gets a pool of up to ``max_connections``.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0,
                 max_connections: int = 10) -> None:
        self.url = url
        self._settings = config.parse(url, connect_timeout=connect_timeout)
        #: The schema that holds the tables.
        self.schema = self._settings.schema
        self._sql = Statements(self.schema)
        self._admin_sql = admin.AdminStatements(self.schema)
        self._timeout = connect_timeout
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, LoopConnections] = {}
        self._schema_checked = False
        #: Counts ``close`` calls: a wait in progress ends rather than open the store again.
        self._closes = 0

    # -- connections ---------------------------------------------------------------------

    async def open(self) -> None:
        await self._connections()

    async def close(self) -> None:
        with self._lock:
            loops, self._loops = list(self._loops.values()), {}
            self._closes += 1
        current = asyncio.get_running_loop()
        for connections in loops:
            if connections.loop is current:
                await connections.close()
            elif connections.loop.is_running():
                # Another thread's loop (a loop that has shut down closed its own already).
                done = asyncio.run_coroutine_threadsafe(connections.close(), connections.loop)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.wrap_future(done), self._timeout)

    async def migrate(self) -> int:
        """Apply the pending migrations of the schema; returns how many were applied."""
        migrations = schema.bundled_migrations()
        with self._errors():
            async with await self._connect() as conn:
                return await schema.migrate(conn, self.schema, migrations,
                                            self._settings.where)

    async def _connections(self) -> LoopConnections:
        """The running loop's connections, made (and the schema checked) on first use."""
        if not self._schema_checked:
            await self._check_schema()
            self._schema_checked = True
        loop = asyncio.get_running_loop()
        with self._lock:
            connections = self._loops.get(loop)
            if connections is None:
                # Forget the loops that ended since, e.g. those of earlier enqueue_sync calls.
                self._loops = {lp: c for lp, c in self._loops.items() if not lp.is_closed()}
                connections = self._loops[loop] = LoopConnections(
                    self._settings.conninfo, self._sql.channel,
                    max_size=self._max_connections, timeout=self._timeout,
                    name=f"workhorse-postgres:{self.schema}")
        await connections.open()
        return connections

    async def _check_schema(self) -> None:
        # A connection of its own, outside the pool, so that a server that cannot be reached
        # fails here with libpq's own reason rather than as a pool timeout.
        migrations = schema.bundled_migrations()
        where = self._settings.where
        with self._errors():
            async with await self._connect() as conn:
                applied = await schema.applied_versions(conn, self.schema)
                schema.check_known(applied, migrations, where)
                if {m.version for m in migrations} <= applied:
                    return
                if not self._settings.migrate:
                    state = f"at version {max(applied)}" if applied else "missing"
                    raise ConfigurationError(
                        f"the workhorse schema {self.schema!r} at {where} is {state}, and "
                        f"migrate=false: run `workhorse migrate URL` to create or update it "
                        f"(this workhorse needs version {migrations[-1].version})"
                    )
                await schema.migrate(conn, self.schema, migrations, where)

    async def _connect(self) -> psycopg.AsyncConnection[TupleRow]:
        return await psycopg.AsyncConnection.connect(self._settings.conninfo, autocommit=True)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return store_errors(self._settings.where, self._timeout)

    async def _rows(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        connections = await self._connections()
        with self._errors():
            async with connections.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall()

    async def _count(self, query: str, params: Params = None) -> int:
        """Run ``query``; the number of rows it changed or returned."""
        connections = await self._connections()
        with self._errors():
            async with connections.connection() as conn:
                cursor = await conn.execute(query, params)
                return cursor.rowcount

    async def now(self) -> float:
        [(now,)] = await self._rows(NOW)
        return float(now)

    # -- producing and consuming ---------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, max_sizes: Mapping[str, int] | None = None,
        connection: object | None = None,
    ) -> list[Enqueued]:
        caller = None if connection is None else callers_connection(connection)
        if not jobs:
            return []
        bounded = sorted(set(max_sizes or ()))
        params = (
            [j.id for j in jobs], [j.name for j in jobs], [j.queue for j in jobs],
            [j.payload for j in jobs],
            [codec.encode(j.headers, what="headers").decode() for j in jobs],
            [j.priority for j in jobs], [j.timeout for j in jobs], [j.run_at for j in jobs],
            [j.unique_key for j in jobs], [j.idempotency_key for j in jobs],
            bounded, [(max_sizes or {})[q] for q in bounded],
        )
        if caller is None:
            rows = await self._rows(self._sql.enqueue, params)
        else:
            await self._connections()  # the schema is checked (or migrated) on our own
            with self._errors():
                rows = await in_callers_transaction(caller, self._sql.enqueue, params)
        return [Enqueued(job_id, EnqueueOutcome(outcome), State(state))
                for job_id, outcome, state in rows]

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease: float,
        limits: Mapping[str, Limits] | None = None,
    ) -> list[JobRecord]:
        wanted = list(dict.fromkeys(queues))
        if limit <= 0 or not wanted:
            return []
        # Listening before the claim reads anything: a commit it cannot see yet is notified.
        listener = await self._listener()
        _claim_mark.set((listener, listener.work_seen))
        limited = [(name, lim) for name, lim in (limits or {}).items()
                   if lim.max_concurrency is not None or lim.rate is not None]
        leasing = asyncio.get_running_loop().create_task(self._rows(self._sql.claim, (
            worker_id, wanted, limit, lease, [new_token() for _ in range(limit)],
            [name for name, _ in limited], [lim.max_concurrency for _, lim in limited],
            [lim.rate for _, lim in limited], [lim.burst for _, lim in limited],
        )), name="workhorse-postgres:claim")
        try:
            rows = await asyncio.shield(leasing)
        except asyncio.CancelledError:
            # The server may have leased jobs already (a worker stopping cancels its claim):
            # give them back rather than leave them to wait for their lease to expire.
            with contextlib.suppress(Exception):
                claimed = [record(row) for row in await leasing]
                await self.settle([Settlement(r.id, r.token or "", State.READY)
                                   for r in claimed])
            raise
        return [record(row) for row in rows]

    async def ack(self, job_id: str, token: str, *, state: State, status: int,
                  result: bytes | None = None) -> bool:
        if state not in (State.SUCCEEDED, State.CANCELLED):
            raise ValueError(f"ack finishes a job as succeeded or cancelled, not {state}")
        return await self._settle_one(Settlement(job_id, token, state, status, result=result))

    async def retry(self, job_id: str, token: str, *, run_at: float, status: int,
                    error: str | None, traceback: str | None) -> bool:
        return await self._settle_one(Settlement(
            job_id, token, State.RETRYING, status, run_at=run_at, error=error,
            traceback=traceback))

    async def bury(self, job_id: str, token: str, *, status: int, error: str | None,
                   traceback: str | None, keep: bool = True) -> bool:
        return await self._settle_one(Settlement(
            job_id, token, State.DEAD, status, error=error, traceback=traceback, keep=keep))

    async def release(self, job_id: str, token: str) -> bool:
        return await self._settle_one(Settlement(job_id, token, State.READY))

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        for s in settlements:
            if s.state not in _SETTLED_AS:
                raise ValueError(f"a run cannot be settled as {s.state}")
            if s.state is State.RETRYING and s.run_at is None:
                raise ValueError("a retry needs run_at")
        if not settlements:
            return []
        [(done,)] = await self._rows(self._sql.settle, (
            [s.job_id for s in settlements], [s.token for s in settlements],
            [s.state.value for s in settlements], [s.status for s in settlements],
            [s.result for s in settlements], [s.run_at for s in settlements],
            [s.error for s in settlements], [s.traceback for s in settlements],
            [s.keep for s in settlements],
        ))
        return [bool(ok) for ok in done]

    async def _settle_one(self, settlement: Settlement) -> bool:
        [done] = await self.settle([settlement])
        return done

    async def checkin(self, job_id: str, token: str, message: str) -> bool:
        return await self._count(self._sql.checkin,
                                 {"id": job_id, "token": token, "message": message}) == 1

    # -- control -------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> State | None:
        [(state,)] = await self._rows(self._sql.cancel, (job_id, int(Status.CANCELLED)))
        return None if state is None else State(state)

    async def cancel_all(self, *, queue: str | None = None, name: str | None = None) -> int:
        [(count,)] = await self._rows(self._sql.cancel_all,
                                      (queue, name, int(Status.CANCELLED)))
        return int(count)

    async def heartbeat(self, worker: WorkerInfo, job_ids: Sequence[str],
                        lease: float) -> HeartbeatReply:
        ids = list(dict.fromkeys(job_ids))
        [(beat, held, cancel)] = await self._rows(self._sql.heartbeat, {
            "id": worker.id, "host": worker.host, "pid": worker.pid,
            "concurrency": worker.concurrency,
            "queues": codec.encode(list(worker.queues), what="queues").decode(),
            "started_at": worker.started_at, "lease": lease, "jobs": ids})
        worker.last_beat = beat
        return HeartbeatReply(cancel=frozenset(cancel), lost=frozenset(ids) - set(held))

    async def unregister(self, worker_id: str) -> None:
        await self._count(self._sql.unregister, (worker_id,))

    async def reap(self, worker_ttl: float) -> int:
        [(requeued, _, _)] = await self._rows(self._sql.reap, {
            "ttl": worker_ttl, "lost": WORKER_LOST, "cancelled": int(Status.CANCELLED)})
        return int(requeued)

    async def pause(self, queue: str) -> None:
        await self._count(self._sql.pause, (queue,))

    async def resume(self, queue: str) -> None:
        await self._count(self._sql.resume, (queue,))

    async def prune(self, *, finished_before: float | None = None,
                    keep: int | None = None) -> int:
        return await self._count(self._sql.prune, {
            "before": finished_before, "keep": None if keep is None else max(0, keep)})

    # -- reading -------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        rows = await self._rows(self._sql.get, (job_id,))
        return record(rows[0]) if rows else None

    async def list_jobs(self, *, state: State | None = None, queue: str | None = None,
                        name: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[JobRecord]:
        query, values = self._sql.list_jobs(
            state=None if state is None else state.value, queue=queue, name=name)
        rows = await self._rows(query, (*values, max(0, limit), max(0, offset)))
        return [record(row) for row in rows]

    async def queue_stats(self) -> list[QueueStats]:
        counts: dict[str, Counter[State]] = {}
        stopped: set[str] = set()
        latency: dict[str, float] = {}
        for queue, state, jobs, oldest, paused, now in await self._rows(self._sql.queue_stats):
            by_state = counts.setdefault(queue, Counter())
            if state is not None:
                by_state[State(state)] = jobs
            if paused:
                stopped.add(queue)
            if state == State.READY.value and oldest is not None:
                latency[queue] = max(0.0, now - oldest)
        return [QueueStats(name=queue, counts={s: by_state[s] for s in State},
                           paused=queue in stopped, latency=latency.get(queue, 0.0))
                for queue, by_state in sorted(counts.items())]

    async def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(id=worker_id, host=host, pid=pid, concurrency=concurrency,
                           queues=list(queues), started_at=started_at, last_beat=last_beat)
                for worker_id, host, pid, concurrency, queues, started_at, last_beat
                in await self._rows(self._sql.workers)]

    async def paused(self) -> set[str]:
        return {queue for (queue,) in await self._rows(self._sql.paused)}

    # -- admin ---------------------------------------------------------------------------

    async def count_jobs(self, *, state: State | None = None, queue: str | None = None,
                         name: str | None = None) -> int:
        [(count,)] = await self._rows(self._admin_sql.count, {
            "state": None if state is None else state.value, "queue": queue, "name": name})
        return int(count)

    async def make_ready(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        [(moved, _)] = await self._rows(self._admin_sql.make_ready, admin.matching(
            _admin_states(states), job_id, queue, name, limit))
        return int(moved)

    async def delete_jobs(
        self, *, states: Collection[State], job_id: str | None = None,
        queue: str | None = None, name: str | None = None, limit: int | None = None,
    ) -> int:
        [(deleted, _)] = await self._rows(self._admin_sql.delete, admin.matching(
            _admin_states(states), job_id, queue, name, limit))
        return int(deleted)

    async def attempt_history(self, job_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
        rows = await self._rows(self._admin_sql.history, (list(dict.fromkeys(job_ids)),))
        return {job_id: history for job_id, attempts in rows
                if (history := history_from_items(attempts))}

    async def scan(self, *, after: int = 0, limit: int = 500) -> ScanPage:
        rows = await self._rows(self._admin_sql.scan, (after, max(0, limit)))
        records = [record(row[2:]) for row in rows]
        histories = {r.id: h for r, row in zip(records, rows, strict=True)
                     if (h := history_from_items(row[1]))}
        more = bool(rows) and len(rows) == limit
        return ScanPage(records, histories, int(rows[-1][0]) + 1 if more else None)

    async def restore(
        self, records: Sequence[JobRecord],
        histories: Mapping[str, Sequence[AttemptRecord]] | None = None,
    ) -> list[bool]:
        refuse_running(records)
        if not records:
            return []
        kept = histories or {}

        def history(job_id: str) -> str | None:
            found = kept.get(job_id)
            return history_to_json(list(found)[-HISTORY_LIMIT:]).decode() if found else None

        [(written, _)] = await self._rows(self._admin_sql.restore, (
            [r.id for r in records], [r.name for r in records], [r.queue for r in records],
            [r.payload for r in records],
            [codec.encode(r.headers, what="headers").decode() for r in records],
            [r.priority for r in records], [r.timeout for r in records],
            [r.state.value for r in records], [r.attempt for r in records],
            [r.run_at for r in records], [r.enqueued_at for r in records],
            [r.started_at for r in records], [r.finished_at for r in records],
            [r.status for r in records], [r.result for r in records],
            [r.error for r in records], [r.traceback for r in records],
            [r.checkin for r in records], [r.checkin_at for r in records],
            [r.unique_key for r in records], [r.idempotency_key for r in records],
            [r.cancel_requested for r in records], [history(r.id) for r in records],
        ))
        created = set(written)
        done: list[bool] = []
        for r in records:  # a repeated id was written once, for its first record
            done.append(r.id in created)
            created.discard(r.id)
        return done

    # -- waiting -------------------------------------------------------------------------

    async def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        # Listen first, then read the job, then wait: a finish between the read and the
        # wait is notified to the waiter already registered.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        closes = self._closes
        while True:
            if closes != self._closes:
                raise StoreError("the PostgreSQL backend was closed during wait_finished")
            listener = await self._listener()
            waiter = listener.watch_job(job_id)
            try:
                job = await self.get(job_id)
                if job is None or job.state.finished:
                    return job
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await asyncio.wait([waiter], timeout=remaining)
            finally:
                listener.unwatch_job(job_id, waiter)

    async def wait_for_work(self, queues: Sequence[str], timeout: float, *,
                            handoff: Handoff | None = None) -> list[JobRecord]:
        # Wakes on a notification for one of ``queues`` (an enqueue, retry, release, reap,
        # resume, or a finished job that may free a concurrency slot), or when the next
        # waiting job falls due. READY jobs found here are not a reason to return: the
        # caller has just claimed what it could, and the rest are held back by limits.
        closes = self._closes
        listener = await self._listener()
        wanted = frozenset(queues)
        waiter = listener.watch_work(wanted)
        try:
            mark = _claim_mark.get()
            if mark is not None and mark[0] is listener and listener.work_since(wanted, mark[1]):
                return []
            [(due,)] = await self._rows(self._sql.next_due, (list(wanted),))
            wait = timeout if due is None else min(timeout, due)
            if wait > 0 and closes == self._closes:
                await asyncio.wait([waiter], timeout=wait)
        finally:
            listener.unwatch_work(waiter)
        return []

    async def open_result_feed(self) -> ResultFeed:
        # NOTIFY from a trigger, gated by a row (see results.py): one look at that row per
        # finish while nobody listens.
        await self._connections()  # checks (and migrates) the schema first
        statements = ResultStatements(self.schema)

        async def renew(seconds: float) -> None:
            await self._count(statements.listen, (seconds,))

        with self._errors():
            return await results.open_feed(self._settings.conninfo, statements.channel,
                                           renew, self.get)

    async def _listener(self) -> Listener:
        listener = (await self._connections()).listener
        with self._errors():
            await listener.start()
        return listener


def _admin_states(states: Collection[State]) -> list[str]:
    if State.RUNNING in states:
        raise ValueError("a RUNNING job leaves RUNNING only through its worker or reap")
    return sorted(s.value for s in states)
