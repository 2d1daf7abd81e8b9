"""The SQL of each verb of the postgres store, and reading its rows back.

Every statement is one round trip and one transaction (autocommit): the moves that need
several steps (enqueue, claim, settle, cancel) call the functions of the migrations, the
others are one statement whose CTEs change rows and NOTIFY together. A NOTIFY in a CTE
runs only if the main query reads that CTE, hence the ``SELECT ... FROM woken`` below.
"""

from __future__ import annotations

from typing import Any

from workhorse import codec
from workhorse.backends.base import JobRecord, State
from workhorse.backends.postgres.schema import render

#: The columns of a JobRecord, in the order ``record`` reads them.
COLUMNS = (
    "id, name, queue, payload, headers, priority, timeout, state, attempt, run_at, "
    "enqueued_at, started_at, finished_at, lease_owner, lease_expires_at, token, status, "
    "result, error, traceback, checkin, checkin_at, unique_key, idempotency_key, "
    "cancel_requested"
)

NOW = "SELECT extract(epoch FROM clock_timestamp())::double precision"


_ENQUEUE = """
SELECT job_id, outcome, job_state FROM {schema}.enqueue(
    %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::integer[],
    %s::double precision[], %s::double precision[], %s::text[], %s::text[], %s::text[],
    %s::integer[])
ORDER BY ord"""

_CLAIM = f"""
SELECT {COLUMNS} FROM {{schema}}.claim(
    %s, %s::text[], %s, %s, %s::text[], %s::text[], %s::integer[], %s::double precision[],
    %s::integer[])"""

_SETTLE = """
SELECT {schema}.settle(
    %s::text[], %s::text[], %s::text[], %s::integer[], %s::bytea[], %s::double precision[],
    %s::text[], %s::text[], %s::boolean[])"""

_CHECKIN = """
UPDATE {schema}.jobs SET checkin = %(message)s, checkin_at = {schema}.epoch()
WHERE id = %(id)s AND state = 'running' AND token = %(token)s"""

_CANCEL = "SELECT {schema}.cancel(%s, %s)"

_CANCEL_ALL = "SELECT {schema}.cancel_all(%s, %s, %s)"

_HEARTBEAT = """
WITH beat AS (
    INSERT INTO {schema}.workers AS w
        (id, host, pid, concurrency, queues, started_at, last_beat)
    VALUES (%(id)s, %(host)s, %(pid)s, %(concurrency)s, %(queues)s::jsonb, %(started_at)s,
            {schema}.epoch())
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, concurrency = excluded.concurrency,
        queues = excluded.queues, started_at = excluded.started_at,
        last_beat = excluded.last_beat
    RETURNING w.last_beat
), held AS (
    UPDATE {schema}.jobs SET lease_expires_at = (SELECT last_beat FROM beat) + %(lease)s
    WHERE id = ANY (%(jobs)s::text[]) AND state = 'running' AND lease_owner = %(id)s
    RETURNING id, cancel_requested
)
SELECT (SELECT last_beat FROM beat),
       coalesce((SELECT array_agg(id) FROM held), ARRAY[]::text[]),
       coalesce((SELECT array_agg(id) FROM held WHERE cancel_requested), ARRAY[]::text[])"""

_UNREGISTER = "DELETE FROM {schema}.workers WHERE id = %s"

# A job whose cancel was asked for is not requeued but ends CANCELLED, as an ack as
# cancelled would end it (the cancel must not be lost with its worker); the SET expressions
# all read the same row version, so each job takes one branch whole. A finished job's "f"
# message wakes its wait_finished callers and the workers of its queue.
_REAP = """
WITH clock AS (
    SELECT {schema}.epoch() AS now
), gone AS (
    DELETE FROM {schema}.workers WHERE last_beat < (SELECT now FROM clock) - %(ttl)s
    RETURNING id
), moved AS (
    UPDATE {schema}.jobs AS j
    SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        status = CASE WHEN j.cancel_requested THEN %(cancelled)s ELSE j.status END,
        result = CASE WHEN j.cancel_requested THEN NULL ELSE j.result END,
        error = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE %(lost)s END,
        traceback = CASE WHEN j.cancel_requested THEN j.traceback END,
        finished_at = CASE WHEN j.cancel_requested THEN (SELECT now FROM clock)
                           ELSE j.finished_at END,
        lease_owner = NULL, lease_expires_at = NULL, token = NULL
    WHERE j.state = 'running'
      AND (j.lease_expires_at < (SELECT now FROM clock)
           OR j.lease_owner IN (SELECT id FROM gone))
    RETURNING j.id, j.queue, j.state
), woken AS (
    SELECT {schema}.notify(jsonb_build_array('w', q.queue))
    FROM (SELECT DISTINCT queue FROM moved WHERE state = 'ready') AS q
), finished AS (
    SELECT {schema}.notify(jsonb_build_array('f', m.id, m.queue))
    FROM moved AS m WHERE m.state = 'cancelled'
)
SELECT (SELECT count(*) FROM moved WHERE state = 'ready'), (SELECT count(*) FROM woken),
       (SELECT count(*) FROM finished)"""

_PAUSE = "INSERT INTO {schema}.paused (queue) VALUES (%s) ON CONFLICT DO NOTHING"

_RESUME = """
WITH gone AS (
    DELETE FROM {schema}.paused WHERE queue = %s RETURNING queue
)
SELECT {schema}.notify(jsonb_build_array('w', queue)) FROM gone"""

# Jobs deleted for their age all ended before any that remain, so "beyond the keep newest"
# ranks every finished job the same way before or after them; OFFSET NULL would rank none.
_PRUNE = """
DELETE FROM {schema}.jobs WHERE seq IN (
    SELECT seq FROM {schema}.jobs
    WHERE state IN ('succeeded', 'dead', 'cancelled') AND finished_at < %(before)s
    UNION
    SELECT ranked.seq FROM (
        SELECT seq FROM {schema}.jobs
        WHERE state IN ('succeeded', 'dead', 'cancelled')
        ORDER BY finished_at DESC, id DESC
        OFFSET %(keep)s
    ) AS ranked
    WHERE %(keep)s::bigint IS NOT NULL
)"""

_GET = f"SELECT {COLUMNS} FROM {{schema}}.jobs WHERE id = %s"

_LIST = (f"SELECT {COLUMNS} FROM {{schema}}.jobs WHERE true{{filters}} "
         "ORDER BY seq LIMIT %s OFFSET %s")

# One row per queue and state, and one for each paused queue without jobs (state NULL).
_QUEUE_STATS = """
SELECT coalesce(c.queue, p.queue), c.state, coalesce(c.jobs, 0), c.oldest,
       p.queue IS NOT NULL, {schema}.epoch()
FROM (SELECT queue, state, count(*) AS jobs, min(run_at) AS oldest
      FROM {schema}.jobs GROUP BY queue, state) AS c
FULL JOIN {schema}.paused AS p ON p.queue = c.queue"""

_WORKERS = """
SELECT id, host, pid, concurrency, queues, started_at, last_beat
FROM {schema}.workers ORDER BY seq"""

_PAUSED = "SELECT queue FROM {schema}.paused"

# Seconds until the next SCHEDULED or RETRYING job of the queues falls due (NULL if none):
# one step down the waiting index per queue and state, where min() over the whole set
# would read every waiting job.
_NEXT_DUE = """
SELECT min(due.run_at) - {schema}.epoch()
FROM unnest(%s::text[]) AS q (queue)
CROSS JOIN LATERAL (
    (SELECT j.run_at FROM {schema}.jobs AS j
     WHERE j.queue = q.queue AND j.state = 'scheduled' ORDER BY j.run_at LIMIT 1)
    UNION ALL
    (SELECT j.run_at FROM {schema}.jobs AS j
     WHERE j.queue = q.queue AND j.state = 'retrying' ORDER BY j.run_at LIMIT 1)
) AS due"""

_CHANNEL = "SELECT {schema}.channel()"


class Statements:
    """The statements above, for one schema."""

    def __init__(self, schema: str) -> None:
        self.enqueue = render(_ENQUEUE, schema)
        self.claim = render(_CLAIM, schema)
        self.settle = render(_SETTLE, schema)
        self.checkin = render(_CHECKIN, schema)
        self.cancel = render(_CANCEL, schema)
        self.cancel_all = render(_CANCEL_ALL, schema)
        self.heartbeat = render(_HEARTBEAT, schema)
        self.unregister = render(_UNREGISTER, schema)
        self.reap = render(_REAP, schema)
        self.pause = render(_PAUSE, schema)
        self.resume = render(_RESUME, schema)
        self.prune = render(_PRUNE, schema)
        self.get = render(_GET, schema)
        self.queue_stats = render(_QUEUE_STATS, schema)
        self.workers = render(_WORKERS, schema)
        self.paused = render(_PAUSED, schema)
        self.next_due = render(_NEXT_DUE, schema)
        self.channel = render(_CHANNEL, schema)
        self._list = render(_LIST, schema)

    def list_jobs(self, **equal: str | None) -> tuple[str, list[str]]:
        """The listing query with `` AND column = %s`` for each given filter, and its values."""
        given = {column: value for column, value in equal.items() if value is not None}
        filters = "".join(f" AND {column} = %s" for column in given)
        return self._list.replace("{filters}", filters), list(given.values())


def record(row: tuple[Any, ...]) -> JobRecord:
    """The JobRecord of a row selected with ``COLUMNS``."""
    (job_id, name, queue, payload, headers, priority, timeout, state, attempt, run_at,
     enqueued_at, started_at, finished_at, lease_owner, lease_expires_at, token, status,
     result, error, traceback, checkin_message, checkin_at, unique_key, idempotency_key,
     cancel_requested) = row
    return JobRecord(
        id=job_id, name=name, queue=queue, payload=bytes(payload),
        headers=codec.headers_of(headers),
        priority=priority, timeout=timeout, state=State(state), attempt=attempt,
        run_at=run_at, enqueued_at=enqueued_at, started_at=started_at,
        finished_at=finished_at, lease_owner=lease_owner, lease_expires_at=lease_expires_at,
        token=token, status=status, result=None if result is None else bytes(result),
        error=error, traceback=traceback, checkin=checkin_message, checkin_at=checkin_at,
        unique_key=unique_key, idempotency_key=idempotency_key,
        cancel_requested=bool(cancel_requested),
    )


class ResultStatements:
    """The SQL of result feeds (migrations/0004_result_streams.sql), rendered for a schema."""

    def __init__(self, schema: str) -> None:
        #: The results channel to LISTEN on.
        self.channel = render("SELECT {schema}.results_channel()", schema)
        #: Keep the trigger telling results for %s more seconds (never shortens it).
        self.listen = render("""
INSERT INTO {schema}.result_listening AS l (only_row, until)
VALUES (true, {schema}.epoch() + %s)
ON CONFLICT (only_row) DO UPDATE SET until = greatest(l.until, EXCLUDED.until)""", schema)
