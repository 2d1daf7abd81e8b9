"""The SQL of the postgres store's admin verbs: each one statement, so one transaction.

Filters are written ``(%(x)s IS NULL OR column = %(x)s)`` so that one prepared text serves
every combination; admin calls are rare, and the planner still uses the indexes on state.
"""

from __future__ import annotations

from typing import Any

from workhorse.backends.postgres.schema import render
from workhorse.backends.postgres.statements import COLUMNS

_MATCHING = """
    SELECT j.seq FROM {schema}.jobs AS j
    WHERE j.state = ANY (%(states)s::text[])
      AND (%(id)s::text IS NULL OR j.id = %(id)s::text)
      AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
      AND (%(name)s::text IS NULL OR j.name = %(name)s::text)
    ORDER BY j.seq LIMIT %(limit)s::bigint
    FOR UPDATE"""

_COUNT = """
SELECT count(*) FROM {schema}.jobs AS j
WHERE (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
  AND (%(name)s::text IS NULL OR j.name = %(name)s::text)"""

# A job whose unique key a live job holds stays where it is; of several matching jobs that
# share a key, the oldest moves.
_MAKE_READY = f"""
WITH picked AS (
    SELECT j.seq, j.id, j.unique_key FROM {{schema}}.jobs AS j
    WHERE j.seq IN ({_MATCHING})
), eligible AS (
    SELECT DISTINCT ON (coalesce(p.unique_key, p.id)) p.seq FROM picked AS p
    WHERE p.unique_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM {{schema}}.jobs AS l
        WHERE l.unique_key = p.unique_key AND l.id <> p.id
          AND l.state IN ('scheduled', 'ready', 'running', 'retrying'))
    ORDER BY coalesce(p.unique_key, p.id), p.seq
), moved AS (
    UPDATE {{schema}}.jobs AS j
    SET state = 'ready', run_at = {{schema}}.epoch(), status = NULL, result = NULL,
        error = NULL, traceback = NULL, finished_at = NULL, checkin = NULL,
        checkin_at = NULL, cancel_requested = false
    FROM eligible AS e
    WHERE j.seq = e.seq AND j.state = ANY (%(states)s::text[])
    RETURNING j.queue
), woken AS (
    SELECT {{schema}}.notify(jsonb_build_array('w', q.queue))
    FROM (SELECT DISTINCT queue FROM moved) AS q
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM woken)"""

# One 'c' message: every wait_finished looks at its job again, and finds it gone.
_DELETE = f"""
WITH doomed AS (
    DELETE FROM {{schema}}.jobs AS j
    WHERE j.seq IN ({_MATCHING}) AND j.state = ANY (%(states)s::text[])
    RETURNING j.id
), woken AS (
    SELECT {{schema}}.notify(jsonb_build_array('c')) WHERE EXISTS (SELECT 1 FROM doomed)
)
SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM woken)"""

_HISTORY = """
SELECT id, attempts FROM {schema}.jobs
WHERE id = ANY (%s::text[]) AND attempts IS NOT NULL"""

_SCAN = f"""
SELECT seq, attempts, {COLUMNS} FROM {{schema}}.jobs WHERE seq >= %s ORDER BY seq LIMIT %s"""

_RESTORED_COLUMNS = (
    "id, name, queue, payload, headers, priority, timeout, state, attempt, run_at, "
    "enqueued_at, started_at, finished_at, status, result, error, traceback, checkin, "
    "checkin_at, unique_key, idempotency_key, cancel_requested, attempts"
)

# ON CONFLICT DO NOTHING, without a target, skips a row that breaks any unique index: its
# id, its idempotency key, or (for a live job) the unique key a live job holds.
_RESTORE = f"""
WITH given AS (
    SELECT * FROM unnest(
        %s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::integer[],
        %s::double precision[], %s::text[], %s::integer[], %s::double precision[],
        %s::double precision[], %s::double precision[], %s::double precision[],
        %s::integer[], %s::bytea[], %s::text[], %s::text[], %s::text[],
        %s::double precision[], %s::text[], %s::text[], %s::boolean[], %s::text[]
    ) WITH ORDINALITY AS g ({_RESTORED_COLUMNS}, ord)
), written AS (
    INSERT INTO {{schema}}.jobs ({_RESTORED_COLUMNS})
    SELECT g.id, g.name, g.queue, g.payload, g.headers::jsonb, g.priority, g.timeout,
           g.state, g.attempt, g.run_at, g.enqueued_at, g.started_at, g.finished_at,
           g.status, g.result, g.error, g.traceback, g.checkin, g.checkin_at, g.unique_key,
           g.idempotency_key, g.cancel_requested, g.attempts::jsonb
    FROM given AS g ORDER BY g.ord
    ON CONFLICT DO NOTHING
    RETURNING id, queue, state
), woken AS (
    SELECT {{schema}}.notify(jsonb_build_array('w', q.queue))
    FROM (SELECT DISTINCT queue FROM written
          WHERE state IN ('scheduled', 'ready', 'retrying')) AS q
)
SELECT coalesce((SELECT array_agg(id) FROM written), ARRAY[]::text[]),
       (SELECT count(*) FROM woken)"""


class AdminStatements:
    """The statements above, for one schema."""

    def __init__(self, schema: str) -> None:
        self.count = render(_COUNT, schema)
        self.make_ready = render(_MAKE_READY, schema)
        self.delete = render(_DELETE, schema)
        self.history = render(_HISTORY, schema)
        self.scan = render(_SCAN, schema)
        self.restore = render(_RESTORE, schema)


def matching(states: list[str], job_id: str | None, queue: str | None, name: str | None,
             limit: int | None) -> dict[str, Any]:
    """The parameters of ``make_ready`` and ``delete``."""
    return {"states": states, "id": job_id, "queue": queue, "name": name,
            "limit": None if limit is None else max(0, limit)}
