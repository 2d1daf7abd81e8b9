"""Reading the sqlite store, and the pieces of SQL that the moves share.

Each function runs inside a transaction begun by ``connection.transaction``.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from workhorse import codec
from workhorse.backends.base import JobRecord, QueueStats, State, WorkerInfo

# Written exactly as in the partial indexes of migrations/0001_initial.sql: the planner
# uses such an index only when a query repeats its condition.
LIVE = "('scheduled', 'ready', 'running', 'retrying')"
FINISHED = "('succeeded', 'dead', 'cancelled')"
WAITING = "('scheduled', 'retrying')"
QUEUED = "('scheduled', 'ready', 'retrying')"

#: The columns of a JobRecord, in the order ``record`` reads them.
COLUMNS = (
    "id, name, queue, payload, headers, priority, timeout, state, attempt, run_at, "
    "enqueued_at, started_at, finished_at, lease_owner, lease_expires_at, token, status, "
    "result, error, traceback, checkin, checkin_at, unique_key, idempotency_key, "
    "cancel_requested"
)


def get(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    """The job with ``job_id``, or None."""
    row = conn.execute(f"SELECT {COLUMNS} FROM workhorse_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else record(row)


def list_jobs(
    conn: sqlite3.Connection, state: State | None, queue: str | None, name: str | None,
    limit: int, offset: int,
) -> list[JobRecord]:
    """Jobs matching the filters, in the order they were enqueued."""
    where, params = filters(state=None if state is None else state.value, queue=queue, name=name)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM workhorse_jobs WHERE 1{where} ORDER BY seq LIMIT ? OFFSET ?",
        (*params, max(0, limit), max(0, offset)),
    )
    return [record(row) for row in rows]


def queue_stats(conn: sqlite3.Connection) -> list[QueueStats]:
    """Counts per queue and state, for queues with jobs and paused ones."""
    now = time.time()
    stopped = set(paused(conn))
    counts: dict[str, Counter[State]] = {queue: Counter() for queue in stopped}
    for queue, state, count in conn.execute(
        "SELECT queue, state, COUNT(*) FROM workhorse_jobs GROUP BY queue, state"
    ):
        counts.setdefault(queue, Counter())[State(state)] = count
    stats: list[QueueStats] = []
    for queue, by_state in sorted(counts.items()):
        latency = 0.0
        if by_state[State.READY]:
            (oldest,) = conn.execute(
                "SELECT MIN(run_at) FROM workhorse_jobs WHERE state = 'ready' AND queue = ?",
                (queue,),
            ).fetchone()
            latency = max(0.0, now - oldest)
        stats.append(QueueStats(name=queue, counts={s: by_state[s] for s in State},
                                paused=queue in stopped, latency=latency))
    return stats


def workers(conn: sqlite3.Connection) -> list[WorkerInfo]:
    """Workers that have beaten and not been forgotten, in the order they first beat."""
    rows = conn.execute(
        "SELECT id, host, pid, concurrency, queues, started_at, last_beat "
        "FROM workhorse_workers ORDER BY rowid"
    )
    return [WorkerInfo(id=worker_id, host=host, pid=pid, concurrency=concurrency,
                       queues=list(codec.decode(queues)), started_at=started_at,
                       last_beat=last_beat)
            for worker_id, host, pid, concurrency, queues, started_at, last_beat in rows]


def paused(conn: sqlite3.Connection) -> list[str]:
    """The paused queues."""
    return [queue for (queue,) in conn.execute("SELECT queue FROM workhorse_paused")]


def work_ahead(conn: sqlite3.Connection, queues: Sequence[str]) -> tuple[bool, float | None]:
    """Whether an unpaused queue of ``queues`` has a READY job, and when the next waiting
    job of ``queues`` falls due (None if none waits)."""
    stopped = set(paused(conn))
    ready = any(
        conn.execute(
            "SELECT 1 FROM workhorse_jobs WHERE state = 'ready' AND queue = ? LIMIT 1", (queue,)
        ).fetchone()
        for queue in dict.fromkeys(queues) if queue not in stopped
    )
    # One lookup per (state, queue) pair: each is a single step down the due index, where
    # MIN() over IN lists would scan every waiting job of the queues.
    soonest: float | None = None
    for queue in dict.fromkeys(queues):
        for state in (State.SCHEDULED, State.RETRYING):
            (due,) = conn.execute(
                "SELECT MIN(run_at) FROM workhorse_jobs WHERE state = ? AND queue = ?",
                (state.value, queue),
            ).fetchone()
            if due is not None and (soonest is None or due < soonest):
                soonest = due
    return ready, soonest


def filters(**equal: str | None) -> tuple[str, list[str]]:
    """`` AND column = ?`` for each given value, and the values."""
    given = {column: value for column, value in equal.items() if value is not None}
    return "".join(f" AND {column} = ?" for column in given), list(given.values())


def marks(values: Sequence[object]) -> str:
    """One ``?`` placeholder per value, comma-separated."""
    return ", ".join("?" * len(values))


def record(row: Any) -> JobRecord:
    """The JobRecord of a row selected with ``COLUMNS``."""
    (job_id, name, queue, payload, headers, priority, timeout, state, attempt, run_at,
     enqueued_at, started_at, finished_at, lease_owner, lease_expires_at, token, status,
     result, error, traceback, checkin_message, checkin_at, unique_key, idempotency_key,
     cancel_requested) = row
    return JobRecord(
        id=job_id, name=name, queue=queue, payload=payload, headers=codec.decode_headers(headers),
        priority=priority, timeout=timeout, state=State(state), attempt=attempt,
        run_at=run_at, enqueued_at=enqueued_at, started_at=started_at,
        finished_at=finished_at, lease_owner=lease_owner, lease_expires_at=lease_expires_at,
        token=token, status=status, result=result, error=error, traceback=traceback,
        checkin=checkin_message, checkin_at=checkin_at, unique_key=unique_key,
        idempotency_key=idempotency_key, cancel_requested=bool(cancel_requested),
    )
