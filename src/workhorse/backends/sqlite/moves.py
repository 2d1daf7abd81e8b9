"""The state moves of the sqlite store, each run inside one write transaction.

``SqliteBackend`` hands each function to ``connection.transaction``, which begins with
BEGIN IMMEDIATE: everything a move reads and writes is one atomic step for every process
sharing the file. Times are ``time.time()`` taken once the write lock is held.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from workhorse import codec
from workhorse.backends.base import (
    WORKER_LOST,
    Enqueued,
    EnqueueOutcome,
    HeartbeatReply,
    JobRecord,
    Limits,
    NewJob,
    Settlement,
    State,
    WorkerInfo,
)
from workhorse.backends.common import new_token, refill
from workhorse.backends.sqlite.queries import (
    COLUMNS,
    FINISHED,
    LIVE,
    QUEUED,
    WAITING,
    filters,
    marks,
    paused,
    record,
)
from workhorse.errors import QueueFull
from workhorse.status import Status

#: The job is RUNNING under the given token (parameters: id, token).
_HELD = "id = ? AND state = 'running' AND token = ?"
_LET_GO = "lease_owner = NULL, lease_expires_at = NULL, token = NULL"


# -- producing ---------------------------------------------------------------------------


def enqueue(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], max_sizes: Mapping[str, int] | None
) -> list[Enqueued]:
    """Insert ``jobs`` whose keys are free; one Enqueued per job, in order.

    Raises QueueFull, before anything is written, if a queue would hold more live jobs
    than its limit in ``max_sizes``.
    """
    now = time.time()
    results: list[Enqueued] = []
    batch_idempotent: dict[str, tuple[str, State]] = {}
    batch_unique: dict[str, tuple[str, State]] = {}
    rows: list[tuple[Any, ...]] = []
    adding: Counter[str] = Counter()
    for new in jobs:
        if new.idempotency_key is not None:
            first = batch_idempotent.get(new.idempotency_key) or _holder(
                conn, "idempotency_key = ?", new.idempotency_key)
            if first is not None:
                results.append(Enqueued(first[0], EnqueueOutcome.EXISTING, first[1]))
                continue
        if new.unique_key is not None:
            holder = batch_unique.get(new.unique_key) or _holder(
                conn, f"unique_key = ? AND state IN {LIVE}", new.unique_key)
            if holder is not None:
                results.append(Enqueued(holder[0], EnqueueOutcome.DUPLICATE, holder[1]))
                continue
        run_at = new.run_at if new.run_at is not None else now
        state = State.SCHEDULED if run_at > now else State.READY
        rows.append((
            new.id, new.name, new.queue, new.payload,
            codec.encode(new.headers, what="headers").decode(), new.priority, new.timeout,
            state.value, run_at, now, new.unique_key, new.idempotency_key,
        ))
        adding[new.queue] += 1
        if new.unique_key is not None:
            batch_unique[new.unique_key] = (new.id, state)
        if new.idempotency_key is not None:
            batch_idempotent[new.idempotency_key] = (new.id, state)
        results.append(Enqueued(new.id, EnqueueOutcome.CREATED, state))
    if max_sizes:
        _check_sizes(conn, adding, max_sizes)
    conn.executemany(
        "INSERT INTO workhorse_jobs (id, name, queue, payload, headers, priority, timeout, "
        "state, run_at, enqueued_at, unique_key, idempotency_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return results


def _holder(conn: sqlite3.Connection, condition: str, key: str) -> tuple[str, State] | None:
    row = conn.execute(f"SELECT id, state FROM workhorse_jobs WHERE {condition}", (key,)).fetchone()
    return None if row is None else (row[0], State(row[1]))


def _check_sizes(
    conn: sqlite3.Connection, adding: Counter[str], max_sizes: Mapping[str, int]
) -> None:
    for queue, count in adding.items():
        limit = max_sizes.get(queue)
        if limit is None:
            continue
        (live,) = conn.execute(
            f"SELECT COUNT(*) FROM workhorse_jobs WHERE queue = ? AND state IN {LIVE}", (queue,)
        ).fetchone()
        if live + count > limit:
            raise QueueFull(f"queue {queue!r} is full ({live} of {limit} live jobs)")


# -- consuming ---------------------------------------------------------------------------


def claim(
    conn: sqlite3.Connection, worker_id: str, queues: Sequence[str], limit: int,
    lease: float, limits: Mapping[str, Limits],
) -> list[JobRecord]:
    """Promote due jobs of ``queues``, then lease up to ``limit`` READY ones."""
    if limit <= 0 or not queues:
        return []
    now = time.time()
    wanted = list(dict.fromkeys(queues))
    conn.execute(
        f"UPDATE workhorse_jobs SET state = 'ready' WHERE state IN {WAITING} "
        f"AND queue IN ({marks(wanted)}) AND run_at <= ?",
        (*wanted, now),
    )
    stopped = set(paused(conn))
    claimed: list[JobRecord] = []
    for queue in wanted:
        if len(claimed) < limit and queue not in stopped:
            _claim_from(conn, queue, claimed, limit, worker_id, lease, limits, now)
    return claimed


def _claim_from(
    conn: sqlite3.Connection, queue: str, claimed: list[JobRecord], limit: int,
    worker_id: str, lease: float, limits: Mapping[str, Limits], now: float,
) -> None:
    """Lease READY jobs of ``queue`` into ``claimed`` until it holds ``limit``."""
    rows = conn.execute(
        "SELECT seq, name FROM workhorse_jobs WHERE queue = ? AND state = 'ready' "
        "ORDER BY priority DESC, seq LIMIT ?",
        (queue, limit - len(claimed)),
    ).fetchall()
    for seq, name in rows:
        if not _admit(conn, name, limits.get(name), now):
            _claim_around(conn, queue, name, claimed, limit, worker_id, lease, limits, now)
            return
        claimed.append(_lease(conn, seq, worker_id, lease, now))


def _claim_around(
    conn: sqlite3.Connection, queue: str, blocked_name: str, claimed: list[JobRecord],
    limit: int, worker_id: str, lease: float, limits: Mapping[str, Limits], now: float,
) -> None:
    """Go on leasing jobs of ``queue`` but none of the handlers that reach their limit.

    Stepping past a blocked handler's jobs in priority order could scan its whole backlog
    while the write lock is held. Instead, take the next ``want`` jobs of every other
    handler and merge them: no handler can contribute more than ``want``, so the merge
    holds every job this claim could take, in the order a plain scan would meet them.
    """
    want = limit - len(claimed)
    blocked = {blocked_name}
    candidates = sorted(
        (-priority, seq, name)
        for name in _ready_names(conn, queue) if name not in blocked
        for seq, priority in conn.execute(
            "SELECT seq, priority FROM workhorse_jobs WHERE queue = ? AND state = 'ready' "
            "AND name = ? ORDER BY priority DESC, seq LIMIT ?",
            (queue, name, want),
        )
    )
    for _, seq, name in candidates:
        if len(claimed) >= limit:
            return
        if name in blocked:
            continue
        if _admit(conn, name, limits.get(name), now):
            claimed.append(_lease(conn, seq, worker_id, lease, now))
        else:
            blocked.add(name)


def _ready_names(conn: sqlite3.Connection, queue: str) -> list[str]:
    """The handler names with READY jobs in ``queue``: one index step per name."""
    return [name for (name,) in conn.execute(
        "WITH RECURSIVE names (name) AS ("
        " SELECT MIN(name) FROM workhorse_jobs WHERE queue = ?1 AND state = 'ready'"
        " UNION ALL"
        " SELECT (SELECT MIN(name) FROM workhorse_jobs"
        "  WHERE queue = ?1 AND state = 'ready' AND name > names.name)"
        " FROM names WHERE names.name IS NOT NULL"
        ") SELECT name FROM names WHERE name IS NOT NULL",
        (queue,),
    )]


def _admit(conn: sqlite3.Connection, name: str, limit: Limits | None, now: float) -> bool:
    """Whether one more job of ``name`` may start now; takes a rate token if so."""
    if limit is None:
        return True
    if limit.max_concurrency is not None:
        # Jobs leased earlier in this transaction are already RUNNING, so they count.
        (running,) = conn.execute(
            "SELECT COUNT(*) FROM workhorse_jobs WHERE name = ? AND state = 'running'", (name,)
        ).fetchone()
        if running >= limit.max_concurrency:
            return False
    if limit.rate is None:
        return True
    row = conn.execute(
        "SELECT tokens, updated FROM workhorse_buckets WHERE name = ?", (name,)
    ).fetchone()
    tokens, updated = (float(limit.burst), now) if row is None else row
    tokens = refill(tokens, updated, now, limit.rate, limit.burst)
    admitted = tokens >= 1
    conn.execute(
        "INSERT INTO workhorse_buckets (name, tokens, updated) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
        (name, tokens - 1 if admitted else tokens, now),
    )
    return admitted


def _lease(
    conn: sqlite3.Connection, seq: int, worker_id: str, lease: float, now: float
) -> JobRecord:
    row = conn.execute(
        "UPDATE workhorse_jobs SET state = 'running', attempt = attempt + 1, token = ?, "
        "lease_owner = ?, lease_expires_at = ?, started_at = ?, finished_at = NULL, "
        "cancel_requested = 0, checkin = NULL, checkin_at = NULL "
        f"WHERE seq = ? RETURNING {COLUMNS}",
        (new_token(), worker_id, now + lease, now, seq),
    ).fetchone()
    return record(row)


def ack(
    conn: sqlite3.Connection, job_id: str, token: str, state: State, status: int,
    result: bytes | None,
) -> bool:
    """Finish a held job as SUCCEEDED (clearing errors) or CANCELLED."""
    cancelled = state is State.CANCELLED
    cursor = conn.execute(
        "UPDATE workhorse_jobs SET state = ?, status = ?, result = ?, finished_at = ?, "
        f"error = ?, traceback = CASE WHEN ? THEN traceback END, {_LET_GO} WHERE {_HELD}",
        (state.value, status, result, time.time(), "cancelled" if cancelled else None,
         cancelled, job_id, token),
    )
    return cursor.rowcount == 1


def retry(
    conn: sqlite3.Connection, job_id: str, token: str, run_at: float, status: int,
    error: str | None, traceback: str | None,
) -> State | None:
    """Move a held job to RETRYING, due at ``run_at``, or end it CANCELLED if its cancel was
    asked for (its worker failed before it heard); the job's new state, or None if it was
    not held."""
    # SET expressions read the row as it was before the update: every CASE sees the same
    # cancel_requested.
    rows = conn.execute(
        "UPDATE workhorse_jobs SET "
        "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'retrying' END, "
        f"status = CASE WHEN cancel_requested THEN {int(Status.CANCELLED)} ELSE ? END, "
        "result = CASE WHEN cancel_requested THEN NULL ELSE result END, "
        "error = CASE WHEN cancel_requested THEN 'cancelled' ELSE ? END, "
        "traceback = CASE WHEN cancel_requested THEN traceback ELSE ? END, "
        "run_at = CASE WHEN cancel_requested THEN run_at ELSE ? END, "
        f"finished_at = ?, {_LET_GO} WHERE {_HELD} RETURNING state",
        (status, error, traceback, run_at, time.time(), job_id, token),
    ).fetchall()
    return State(rows[0][0]) if rows else None


def bury(
    conn: sqlite3.Connection, job_id: str, token: str, status: int, error: str | None,
    traceback: str | None, keep: bool,
) -> bool:
    """Move a held job to DEAD, or delete it."""
    if not keep:
        cursor = conn.execute(f"DELETE FROM workhorse_jobs WHERE {_HELD}", (job_id, token))
        return cursor.rowcount == 1
    cursor = conn.execute(
        "UPDATE workhorse_jobs SET state = 'dead', status = ?, error = ?, traceback = ?, "
        f"finished_at = ?, {_LET_GO} WHERE {_HELD}",
        (status, error, traceback, time.time(), job_id, token),
    )
    return cursor.rowcount == 1


def _or_cancelled(ready: str) -> str:
    """The SET list of a move that makes a RUNNING job READY with the assignments ``ready``
    (which must set error), or CANCELLED if its cancel was asked for, as ``ack`` would
    finish it: status 499, no result, finished at the time given as the first parameter.

    A cancel must not be lost when its job leaves RUNNING without its worker's ack (reap,
    release; ``retry`` does the same in its own statement). SET expressions read the row
    as it was before the update, so every CASE sees the same ``cancel_requested``.
    """
    return (
        "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END, "
        f"status = CASE WHEN cancel_requested THEN {int(Status.CANCELLED)} ELSE status END, "
        "result = CASE WHEN cancel_requested THEN NULL ELSE result END, "
        "finished_at = CASE WHEN cancel_requested THEN ? ELSE finished_at END, "
        f"{ready}, {_LET_GO}"
    )


def release(conn: sqlite3.Connection, job_id: str, token: str) -> State | None:
    """Give a held job back as READY, its attempt not counted, or end it CANCELLED if its
    cancel was asked for; the job's new state, or None if it was not held."""
    rows = conn.execute(
        "UPDATE workhorse_jobs SET "
        + _or_cancelled(
            "attempt = CASE WHEN cancel_requested THEN attempt ELSE attempt - 1 END, "
            "error = CASE WHEN cancel_requested THEN 'cancelled' ELSE error END")
        + f" WHERE {_HELD} RETURNING state",
        (time.time(), job_id, token),
    ).fetchall()
    return State(rows[0][0]) if rows else None


def settle(conn: sqlite3.Connection, settlements: Sequence[Settlement]) -> list[State | None]:
    """Apply each settlement with the move its state names, all in the caller's transaction;
    per settlement, the state its job ended in, or None where it was not held."""
    done: list[State | None] = []
    for s in settlements:
        if s.state in (State.SUCCEEDED, State.CANCELLED):
            ok = ack(conn, s.job_id, s.token, s.state, s.status, s.result)
        elif s.state is State.RETRYING:
            assert s.run_at is not None, "a retry needs run_at"
            done.append(retry(conn, s.job_id, s.token, s.run_at, s.status, s.error,
                              s.traceback))
            continue
        elif s.state is State.DEAD:
            ok = bury(conn, s.job_id, s.token, s.status, s.error, s.traceback, s.keep)
        elif s.state is State.READY:
            done.append(release(conn, s.job_id, s.token))
            continue
        else:
            raise ValueError(f"a run cannot be settled as {s.state}")
        done.append(s.state if ok else None)
    return done


def checkin(conn: sqlite3.Connection, job_id: str, token: str, message: str) -> bool:
    """Store a progress message on a held job."""
    cursor = conn.execute(
        f"UPDATE workhorse_jobs SET checkin = ?, checkin_at = ? WHERE {_HELD}",
        (message, time.time(), job_id, token),
    )
    return cursor.rowcount == 1


# -- control -----------------------------------------------------------------------------


def cancel(conn: sqlite3.Connection, job_id: str) -> State | None:
    """Cancel a queued job, or flag a RUNNING one; the job's state afterwards."""
    row = conn.execute("SELECT state FROM workhorse_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    state = State(row[0])
    if state is State.RUNNING:
        conn.execute("UPDATE workhorse_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
    elif state.live:
        conn.execute(
            "UPDATE workhorse_jobs SET state = 'cancelled', status = ?, error = 'cancelled', "
            "finished_at = ? WHERE id = ?",
            (int(Status.CANCELLED), time.time(), job_id),
        )
        state = State.CANCELLED
    return state


def cancel_all(
    conn: sqlite3.Connection, queue: str | None, name: str | None
) -> tuple[int, list[str]]:
    """Cancel every live job matching the filters: how many, and the ids now CANCELLED."""
    where, params = filters(queue=queue, name=name)
    flagged = conn.execute(
        f"UPDATE workhorse_jobs SET cancel_requested = 1 WHERE state = 'running'{where}", params
    ).rowcount
    cancelled = [job_id for (job_id,) in conn.execute(
        "UPDATE workhorse_jobs SET state = 'cancelled', status = ?, error = 'cancelled', "
        f"finished_at = ? WHERE state IN {QUEUED}{where} RETURNING id",
        (int(Status.CANCELLED), time.time(), *params),
    )]
    return flagged + len(cancelled), cancelled


def heartbeat(
    conn: sqlite3.Connection, worker: WorkerInfo, job_ids: Sequence[str], lease: float
) -> tuple[HeartbeatReply, float]:
    """Upsert the worker and extend the leases it still holds; the reply and the beat time."""
    now = time.time()
    conn.execute(
        "INSERT INTO workhorse_workers (id, host, pid, concurrency, queues, started_at, "
        "last_beat) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "host = excluded.host, pid = excluded.pid, concurrency = excluded.concurrency, "
        "queues = excluded.queues, started_at = excluded.started_at, "
        "last_beat = excluded.last_beat",
        (worker.id, worker.host, worker.pid, worker.concurrency,
         codec.encode(list(worker.queues), what="queues").decode(), worker.started_at, now),
    )
    ids = list(dict.fromkeys(job_ids))
    held = dict(conn.execute(
        f"UPDATE workhorse_jobs SET lease_expires_at = ? WHERE id IN ({marks(ids)}) "
        "AND state = 'running' AND lease_owner = ? RETURNING id, cancel_requested",
        (now + lease, *ids, worker.id),
    ).fetchall())
    reply = HeartbeatReply(
        cancel=frozenset(job_id for job_id, flagged in held.items() if flagged),
        lost=frozenset(ids) - held.keys(),
    )
    return reply, now


def unregister(conn: sqlite3.Connection, worker_id: str) -> None:
    """Forget a worker."""
    conn.execute("DELETE FROM workhorse_workers WHERE id = ?", (worker_id,))


def reap(conn: sqlite3.Connection, worker_ttl: float) -> tuple[int, list[str]]:
    """Requeue RUNNING jobs with an expired lease or a silent worker, marked WORKER_LOST, or
    end them CANCELLED if their cancel was asked for; forget such workers. Returns how many
    were requeued and the ids of those cancelled."""
    now = time.time()
    gone = [worker_id for (worker_id,) in conn.execute(
        "DELETE FROM workhorse_workers WHERE last_beat < ? RETURNING id", (now - worker_ttl,)
    )]
    rows = conn.execute(
        "UPDATE workhorse_jobs SET "
        + _or_cancelled(
            "error = CASE WHEN cancel_requested THEN 'cancelled' ELSE ? END, "
            "traceback = CASE WHEN cancel_requested THEN traceback END")
        + " WHERE state = 'running' "
        f"AND (lease_expires_at < ? OR lease_owner IN ({marks(gone)})) RETURNING id, state",
        (now, WORKER_LOST, now, *gone),
    ).fetchall()
    cancelled = [job_id for job_id, state in rows if state == State.CANCELLED.value]
    return len(rows) - len(cancelled), cancelled


def pause(conn: sqlite3.Connection, queue: str) -> None:
    """Mark ``queue`` paused."""
    conn.execute("INSERT OR IGNORE INTO workhorse_paused (queue) VALUES (?)", (queue,))


def resume(conn: sqlite3.Connection, queue: str) -> None:
    """Mark ``queue`` not paused."""
    conn.execute("DELETE FROM workhorse_paused WHERE queue = ?", (queue,))


def prune(conn: sqlite3.Connection, finished_before: float | None, keep: int | None) -> int:
    """Delete finished jobs ended before ``finished_before`` or beyond the ``keep`` newest."""
    # Without statistics the planner would walk every finished job through the state
    # index; the partial index on finished_at finds the old ones directly.
    deleted = 0
    if finished_before is not None:
        deleted += conn.execute(
            "DELETE FROM workhorse_jobs INDEXED BY workhorse_jobs_finished "
            f"WHERE state IN {FINISHED} AND finished_at < ?",
            (finished_before,),
        ).rowcount
    if keep is not None:
        # The jobs deleted above all ended before any that remain, so ranking what remains
        # gives the same "beyond the keep newest" as ranking every finished job.
        deleted += conn.execute(
            "DELETE FROM workhorse_jobs WHERE seq IN (SELECT seq FROM workhorse_jobs "
            f"INDEXED BY workhorse_jobs_finished WHERE state IN {FINISHED} "
            "ORDER BY finished_at DESC, id DESC LIMIT -1 OFFSET ?)",
            (max(0, keep),),
        ).rowcount
    return deleted
