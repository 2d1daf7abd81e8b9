-- The first schema: jobs, workers, paused queues and the rate buckets of handlers.
-- Times are REAL epoch seconds; states are the values of workhorse.backends.base.State.

CREATE TABLE workhorse_jobs (
    -- Insertion order, never reused: FIFO within a priority and "oldest first" listings,
    -- without trusting float timestamps to be distinct.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    -- A JSON object of str to str.
    headers TEXT NOT NULL,
    priority INTEGER NOT NULL,
    timeout REAL,
    state TEXT NOT NULL CHECK (state IN (
        'scheduled', 'ready', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempt INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lease_owner TEXT,
    lease_expires_at REAL,
    token TEXT,
    status INTEGER,
    result BLOB,
    error TEXT,
    traceback TEXT,
    checkin TEXT,
    checkin_at REAL,
    unique_key TEXT,
    idempotency_key TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX workhorse_jobs_id ON workhorse_jobs (id);

-- claim: the next READY job of a queue by priority, then age; also counts per queue/state.
CREATE INDEX workhorse_jobs_claim ON workhorse_jobs (queue, state, priority DESC, seq);

-- claim once a handler is at its limit: the handlers with READY jobs in a queue, and the
-- next jobs of each, without stepping over the backlog of the blocked handler.
CREATE INDEX workhorse_jobs_claim_by_name
    ON workhorse_jobs (queue, state, name, priority DESC, seq);

-- Promoting due SCHEDULED/RETRYING jobs and finding the next due time of a queue; the
-- oldest READY job of a queue (latency); RUNNING jobs for reap.
CREATE INDEX workhorse_jobs_due ON workhorse_jobs (state, queue, run_at);

-- max_concurrency counts the RUNNING jobs of a handler; cancel_all by name.
CREATE INDEX workhorse_jobs_name ON workhorse_jobs (name, state);

-- At most one live job per unique key; finished jobs free their key.
CREATE UNIQUE INDEX workhorse_jobs_unique ON workhorse_jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND state IN ('scheduled', 'ready', 'running', 'retrying');

-- An idempotency key names one job whatever its state, until that job is deleted.
CREATE UNIQUE INDEX workhorse_jobs_idempotency ON workhorse_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- prune: finished jobs by the time they ended.
CREATE INDEX workhorse_jobs_finished ON workhorse_jobs (finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled');

CREATE TABLE workhorse_workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    -- A JSON list of queue names.
    queues TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_beat REAL NOT NULL
);

CREATE TABLE workhorse_paused (
    queue TEXT PRIMARY KEY
);

-- The token bucket of each rate-limited handler, shared by every process on the file.
CREATE TABLE workhorse_buckets (
    name TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated REAL NOT NULL
);
