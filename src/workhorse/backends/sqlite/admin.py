"""The admin moves of the sqlite store: counting, requeueing, deleting, scanning, restoring.

Like ``moves``, each function runs inside one transaction begun by ``connection.transaction``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from workhorse import codec
from workhorse.backends.base import (
    HISTORY_LIMIT,
    AttemptRecord,
    JobRecord,
    ScanPage,
    State,
)
from workhorse.backends.common import history_from_json, history_to_json
from workhorse.backends.sqlite.queries import COLUMNS, LIVE, filters, marks, record


def count_jobs(conn: sqlite3.Connection, state: State | None, queue: str | None,
               name: str | None) -> int:
    """How many jobs match the filters."""
    where, params = filters(state=None if state is None else state.value, queue=queue, name=name)
    (count,) = conn.execute(f"SELECT COUNT(*) FROM workhorse_jobs WHERE 1{where}",
                            params).fetchone()
    return int(count)


def _matching(conn: sqlite3.Connection, states: Collection[State], job_id: str | None,
              queue: str | None, name: str | None, limit: int | None) -> list[tuple[Any, ...]]:
    """(seq, id, unique_key) of the jobs in ``states`` matching the filters, oldest first."""
    if State.RUNNING in states:
        raise ValueError("a RUNNING job leaves RUNNING only through its worker or reap")
    wanted = sorted(s.value for s in states)
    if not wanted:
        return []
    where, params = filters(id=job_id, queue=queue, name=name)
    return conn.execute(
        f"SELECT seq, id, unique_key FROM workhorse_jobs WHERE state IN ({marks(wanted)})"
        f"{where} ORDER BY seq LIMIT ?",
        (*wanted, *params, -1 if limit is None else max(0, limit)),
    ).fetchall()


def make_ready(conn: sqlite3.Connection, states: Collection[State], job_id: str | None,
               queue: str | None, name: str | None, limit: int | None) -> int:
    """Move the matching jobs to READY, due now; a job whose unique key a live job holds
    stays. Returns how many moved."""
    now = time.time()
    moved = 0
    for seq, own_id, unique_key in _matching(conn, states, job_id, queue, name, limit):
        # Checked one job at a time: a job moved earlier in this loop is live already.
        if unique_key is not None and conn.execute(
                f"SELECT 1 FROM workhorse_jobs WHERE unique_key = ? AND state IN {LIVE} "
                "AND id != ?", (unique_key, own_id)).fetchone() is not None:
            continue
        conn.execute(
            "UPDATE workhorse_jobs SET state = 'ready', run_at = ?, status = NULL, "
            "result = NULL, error = NULL, traceback = NULL, finished_at = NULL, "
            "checkin = NULL, checkin_at = NULL, cancel_requested = 0 WHERE seq = ?",
            (now, seq),
        )
        moved += 1
    return moved


def delete_jobs(conn: sqlite3.Connection, states: Collection[State], job_id: str | None,
                queue: str | None, name: str | None, limit: int | None) -> int:
    """Delete the matching jobs; returns how many."""
    doomed = [seq for seq, _, _ in _matching(conn, states, job_id, queue, name, limit)]
    deleted = 0
    for start in range(0, len(doomed), 500):  # within SQLite's limit of bound parameters
        chunk = doomed[start:start + 500]
        deleted += conn.execute(
            f"DELETE FROM workhorse_jobs WHERE seq IN ({marks(chunk)})", chunk).rowcount
    return deleted


def attempt_history(conn: sqlite3.Connection,
                    job_ids: Sequence[str]) -> dict[str, list[AttemptRecord]]:
    """The recorded failed attempts of each job that has any."""
    found: dict[str, list[AttemptRecord]] = {}
    ids = list(dict.fromkeys(job_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for job_id, attempts in conn.execute(
                f"SELECT id, attempts FROM workhorse_jobs WHERE id IN ({marks(chunk)}) "
                "AND attempts IS NOT NULL", chunk):
            history = history_from_json(attempts)
            if history:
                found[job_id] = history
    return found


def scan(conn: sqlite3.Connection, after: int, limit: int) -> ScanPage:
    """Up to ``limit`` jobs from enqueue position ``after`` on."""
    rows = conn.execute(
        f"SELECT seq, attempts, {COLUMNS} FROM workhorse_jobs WHERE seq >= ? ORDER BY seq "
        "LIMIT ?", (after, max(0, limit)),
    ).fetchall()
    records = [record(row[2:]) for row in rows]
    histories = {r.id: h for r, row in zip(records, rows, strict=True)
                 if (h := history_from_json(row[1]))}
    after_last = rows[-1][0] + 1 if len(rows) == limit and rows else None
    return ScanPage(records, histories, after_last)


def restore(conn: sqlite3.Connection, records: Sequence[JobRecord],
            histories: Mapping[str, Sequence[AttemptRecord]]) -> list[bool]:
    """Insert each record as given unless one of its keys is taken; True where written."""
    done: list[bool] = []
    for r in records:
        history = histories.get(r.id)
        # OR IGNORE skips a row that breaks a unique index: its id, its idempotency key, or
        # (for a live job) the unique key a live job holds.
        cursor = conn.execute(
            "INSERT OR IGNORE INTO workhorse_jobs (id, name, queue, payload, headers, "
            "priority, timeout, state, attempt, run_at, enqueued_at, started_at, finished_at, "
            "status, result, error, traceback, checkin, checkin_at, unique_key, "
            "idempotency_key, cancel_requested, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.name, r.queue, r.payload,
             codec.encode(r.headers, what="headers").decode(), r.priority, r.timeout,
             r.state.value, r.attempt, r.run_at, r.enqueued_at, r.started_at, r.finished_at,
             r.status, r.result, r.error, r.traceback, r.checkin, r.checkin_at, r.unique_key,
             r.idempotency_key, int(r.cancel_requested),
             history_to_json(list(history)[-HISTORY_LIMIT:]).decode() if history else None),
        )
        done.append(cursor.rowcount == 1)
    return done
