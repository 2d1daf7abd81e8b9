-- The first schema: jobs, workers, paused queues, the rate buckets of handlers, and the
-- functions that make enqueue, claim, settle and cancel one round trip each.
--
-- Placeholders filled in by workhorse.backends.postgres.schema.render: {schema} is the
-- schema as a quoted identifier, {schema_name} its name as a string literal and {channel}
-- the LISTEN/NOTIFY channel as a string literal. Times are double precision epoch seconds
-- from the server's clock; states are the values of workhorse.backends.base.State.

CREATE FUNCTION {schema}.epoch() RETURNS double precision
    LANGUAGE sql VOLATILE
    AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

-- The channel that workers LISTEN on; read by the listener so that it always matches the
-- one these functions notify.
CREATE FUNCTION {schema}.channel() RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT {channel}::text $$;

-- Messages: ["w", queue] work may be ready in queue; ["f", job id, queue] a job finished
-- (which may also free a concurrency slot); ["c"] jobs were cancelled in bulk. A NOTIFY is
-- delivered when its transaction commits, and never if it rolls back.
CREATE FUNCTION {schema}.notify(message jsonb) RETURNS void
    LANGUAGE sql VOLATILE
    AS $$ SELECT pg_notify({channel}, message::text) $$;

CREATE TABLE {schema}.jobs (
    -- Insertion order, never reused: FIFO within a priority and "oldest first" listings.
    seq bigserial PRIMARY KEY,
    id text NOT NULL,
    name text NOT NULL,
    queue text NOT NULL,
    payload bytea NOT NULL,
    -- A JSON object of str to str.
    headers jsonb NOT NULL,
    priority integer NOT NULL,
    timeout double precision,
    state text NOT NULL CHECK (state IN (
        'scheduled', 'ready', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempt integer NOT NULL DEFAULT 0,
    run_at double precision NOT NULL,
    enqueued_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    lease_owner text,
    lease_expires_at double precision,
    token text,
    status integer,
    result bytea,
    error text,
    traceback text,
    checkin text,
    checkin_at double precision,
    unique_key text,
    idempotency_key text,
    cancel_requested boolean NOT NULL DEFAULT false
);

CREATE UNIQUE INDEX jobs_id ON {schema}.jobs (id);

-- Partial indexes hold only the jobs each query looks for, so the large and growing set of
-- finished jobs never slows down a claim. A query uses one only when its condition
-- implies the index's (``state = 'ready'`` written as a constant).

-- claim: the next READY jobs of a queue by priority, then age.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, priority DESC, seq) WHERE state = 'ready';

-- claim once a handler is at its limit: the handlers with READY jobs in a queue, and the
-- next jobs of each, without stepping over the backlog of the blocked handler.
CREATE INDEX jobs_ready_by_name ON {schema}.jobs (queue, name, priority DESC, seq)
    WHERE state = 'ready';

-- claim promotes due jobs; wait_for_work finds the next due time of its queues.
CREATE INDEX jobs_waiting ON {schema}.jobs (queue, state, run_at)
    WHERE state IN ('scheduled', 'retrying');

-- max_concurrency counts the RUNNING jobs of a handler; reap looks at every RUNNING job.
CREATE INDEX jobs_running ON {schema}.jobs (name) WHERE state = 'running';

-- At most one live job per unique key; finished jobs free their key.
CREATE UNIQUE INDEX jobs_unique ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'ready', 'running', 'retrying');

-- An idempotency key names one job whatever its state, until that job is deleted.
CREATE UNIQUE INDEX jobs_idempotency ON {schema}.jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- prune: finished jobs by the time they ended.
CREATE INDEX jobs_finished ON {schema}.jobs (finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled');

CREATE TABLE {schema}.workers (
    -- The order in which workers first beat.
    seq bigserial,
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    concurrency integer NOT NULL,
    -- A JSON list of queue names.
    queues jsonb NOT NULL,
    started_at double precision NOT NULL,
    last_beat double precision NOT NULL
);

CREATE TABLE {schema}.paused (
    queue text PRIMARY KEY
);

-- The token bucket of each rate-limited handler, shared by every process on the store.
-- Only a claim holding the handler's advisory lock reads or writes its row.
CREATE TABLE {schema}.buckets (
    name text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated double precision NOT NULL
);

-- Advisory locks, all transaction-level and keyed (hashtext({schema_name}), hashtext(what)):
-- 'handler:' || name while a claim admits jobs of a limited handler, 'queue:' || name while
-- an enqueue fills a bounded queue, 'migrate' while a migration runs. Every lock that is
-- waited for is taken in ascending key order, so two transactions never wait for each other
-- in a cycle; a key two names share only serializes them.

-- Writes a batch in order; one row per job: its position, id, outcome ('created',
-- 'duplicate', 'existing') and state. Raises SQLSTATE WH001 (and writes nothing) if a
-- bounded queue would hold more live jobs than its max size.
CREATE FUNCTION {schema}.enqueue(
    p_ids text[], p_names text[], p_queues text[], p_payloads bytea[], p_headers text[],
    p_priorities integer[], p_timeouts double precision[], p_run_ats double precision[],
    p_unique_keys text[], p_idempotency_keys text[], p_bounded text[], p_max_sizes integer[]
) RETURNS TABLE (ord integer, job_id text, outcome text, job_state text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := {schema}.epoch();
    v_key integer;
    v_run_at double precision;
    v_created text[] := ARRAY[]::text[];
    v_queue text;
    v_max integer;
    v_live bigint;
    v_try integer;
BEGIN
    FOR v_key IN
        SELECT DISTINCT hashtext('queue:' || b.queue) FROM unnest(p_bounded) AS b (queue)
        WHERE b.queue = ANY (p_queues) ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext({schema_name}), v_key);
    END LOOP;

    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        ord := i;
        outcome := NULL;
        -- A second try only after losing a race: the insert then waited for a concurrent
        -- batch that took the same key, and the lookups see its job now.
        FOR v_try IN 1 .. 2 LOOP
            IF p_idempotency_keys[i] IS NOT NULL THEN
                SELECT j.id, j.state INTO job_id, job_state FROM {schema}.jobs AS j
                WHERE j.idempotency_key = p_idempotency_keys[i];
                IF FOUND THEN
                    outcome := 'existing';
                    EXIT;
                END IF;
            END IF;
            IF p_unique_keys[i] IS NOT NULL THEN
                SELECT j.id, j.state INTO job_id, job_state FROM {schema}.jobs AS j
                WHERE j.unique_key = p_unique_keys[i]
                  AND j.state IN ('scheduled', 'ready', 'running', 'retrying');
                IF FOUND THEN
                    outcome := 'duplicate';
                    EXIT;
                END IF;
            END IF;
            v_run_at := coalesce(p_run_ats[i], v_now);
            INSERT INTO {schema}.jobs AS j (id, name, queue, payload, headers, priority,
                                             timeout, state, run_at, enqueued_at, unique_key,
                                             idempotency_key)
            VALUES (p_ids[i], p_names[i], p_queues[i], p_payloads[i], p_headers[i]::jsonb,
                    p_priorities[i], p_timeouts[i],
                    CASE WHEN v_run_at > v_now THEN 'scheduled' ELSE 'ready' END,
                    v_run_at, v_now, p_unique_keys[i], p_idempotency_keys[i])
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.state INTO job_id, job_state;
            IF FOUND THEN
                outcome := 'created';
                v_created := v_created || p_queues[i];
                EXIT;
            END IF;
        END LOOP;
        IF outcome IS NULL THEN
            RAISE unique_violation USING MESSAGE = format(
                'job %s cannot be written: a job with this id exists already', p_ids[i]);
        END IF;
        RETURN NEXT;
    END LOOP;

    FOR v_queue, v_max IN
        SELECT b.queue, b.max_size FROM unnest(p_bounded, p_max_sizes) AS b (queue, max_size)
        WHERE b.queue = ANY (v_created)
    LOOP
        SELECT count(*) INTO v_live FROM {schema}.jobs AS j
        WHERE j.queue = v_queue AND j.state IN ('scheduled', 'ready', 'running', 'retrying');
        IF v_live > v_max THEN
            RAISE EXCEPTION 'queue % is full (% of % live jobs)', quote_literal(v_queue),
                v_live - (SELECT count(*) FROM unnest(v_created) AS c (queue)
                          WHERE c.queue = v_queue),
                v_max
                USING ERRCODE = 'WH001';
        END IF;
    END LOOP;

    PERFORM {schema}.notify(jsonb_build_array('w', c.queue))
    FROM (SELECT DISTINCT u.queue FROM unnest(v_created) AS u (queue)) AS c;
END;
$$;

-- Promotes due jobs of p_queues, then leases up to p_limit READY jobs to p_worker: queues in
-- the order given (paused ones skipped), within a queue by priority DESC then seq, skipping
-- rows other transactions hold and the jobs of handlers at their limits. p_names lists the
-- limited handlers; p_max_running, p_rates and p_bursts their limits (NULL: none).
-- p_tokens holds one fresh token per job this claim may lease.
CREATE FUNCTION {schema}.claim(
    p_worker text, p_queues text[], p_limit integer, p_lease double precision,
    p_tokens text[], p_names text[], p_max_running integer[], p_rates double precision[],
    p_bursts integer[]
) RETURNS SETOF {schema}.jobs
LANGUAGE plpgsql AS $$
DECLARE
    v_open text[];
    v_locked text[];
    v_key integer;
    v_now double precision;
    v_queue text;
    v_cursor refcursor;
    v_around boolean;
    v_rescan boolean;
    v_blocked text[];
    v_seq bigint;
    v_name text;
    v_i integer;
    v_admit boolean;
    v_count bigint;
    v_refilled double precision;
    -- Per limited handler (indexed as p_names), once looked at: its RUNNING jobs and the
    -- tokens left in its bucket.
    v_running bigint[] := ARRAY[]::bigint[];
    v_tokens double precision[] := ARRAY[]::double precision[];
    v_taken integer := 0;
    v_job {schema}.jobs;
BEGIN
    IF p_limit <= 0 OR coalesce(cardinality(p_queues), 0) = 0 THEN
        RETURN;
    END IF;

    -- Rows another transaction holds are left to it (or to the next claim), never waited for.
    UPDATE {schema}.jobs AS j SET state = 'ready'
    FROM (SELECT d.seq FROM {schema}.jobs AS d
          WHERE d.state IN ('scheduled', 'retrying') AND d.queue = ANY (p_queues)
            AND d.run_at <= {schema}.epoch()
          FOR UPDATE SKIP LOCKED) AS due
    WHERE j.seq = due.seq;

    SELECT coalesce(array_agg(q.queue ORDER BY q.ord), ARRAY[]::text[]) INTO v_open
    FROM unnest(p_queues) WITH ORDINALITY AS q (queue, ord)
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.paused AS p WHERE p.queue = q.queue);

    -- Each limited handler with READY jobs here is locked until commit, so that the RUNNING
    -- jobs counted and the bucket read below stay true while this claim adds to them: two
    -- claims cannot both take its last slot or token. The RUNNING count is read after the
    -- lock, in a statement of its own, so it sees every claim committed before.
    SELECT coalesce(array_agg(n.name), ARRAY[]::text[]) INTO v_locked
    FROM unnest(p_names) AS n (name)
    WHERE EXISTS (SELECT 1 FROM {schema}.jobs AS j
                  WHERE j.state = 'ready' AND j.queue = ANY (v_open) AND j.name = n.name);
    FOR v_key IN
        SELECT DISTINCT hashtext('handler:' || l.name) FROM unnest(v_locked) AS l (name)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext({schema_name}), v_key);
    END LOOP;
    v_now := {schema}.epoch();

    FOREACH v_queue IN ARRAY v_open LOOP
        EXIT WHEN v_taken >= p_limit;
        v_blocked := ARRAY[]::text[];
        v_around := false;
        LOOP
            IF NOT v_around THEN
                OPEN v_cursor FOR
                    SELECT j.seq, j.name FROM {schema}.jobs AS j
                    WHERE j.queue = v_queue AND j.state = 'ready'
                    ORDER BY j.priority DESC, j.seq
                    LIMIT p_limit - v_taken
                    FOR UPDATE SKIP LOCKED;
            ELSE
                -- Stepping past a blocked handler's jobs in priority order could scan its whole
                -- backlog. Instead take the next jobs of every other handler (one index step
                -- per handler name) and merge them: no handler can contribute more than this
                -- claim still wants, so the merge holds every job a plain scan would meet.
                OPEN v_cursor FOR
                    WITH RECURSIVE names (name) AS (
                        SELECT min(j.name) FROM {schema}.jobs AS j
                        WHERE j.queue = v_queue AND j.state = 'ready'
                        UNION ALL
                        SELECT (SELECT min(j.name) FROM {schema}.jobs AS j
                                WHERE j.queue = v_queue AND j.state = 'ready'
                                  AND j.name > names.name)
                        FROM names WHERE names.name IS NOT NULL
                    )
                    SELECT c.seq, c.name
                    FROM (SELECT names.name FROM names
                          WHERE names.name IS NOT NULL AND names.name <> ALL (v_blocked)) AS n
                    CROSS JOIN LATERAL (
                        SELECT j.seq, j.name, j.priority FROM {schema}.jobs AS j
                        WHERE j.queue = v_queue AND j.state = 'ready' AND j.name = n.name
                        ORDER BY j.priority DESC, j.seq
                        LIMIT p_limit - v_taken
                        FOR UPDATE SKIP LOCKED
                    ) AS c
                    ORDER BY c.priority DESC, c.seq;
            END IF;
            v_rescan := false;
            LOOP
                FETCH v_cursor INTO v_seq, v_name;
                EXIT WHEN NOT FOUND OR v_taken >= p_limit;
                CONTINUE WHEN v_name = ANY (v_blocked);

                v_admit := true;
                v_i := array_position(p_names, v_name);
                IF v_i IS NOT NULL THEN
                    IF NOT v_name = ANY (v_locked) THEN
                        -- Its jobs became READY after the locks above were taken: only try
                        -- the lock, since waiting here could close a cycle with another claim.
                        IF pg_try_advisory_xact_lock(hashtext({schema_name}),
                                                     hashtext('handler:' || v_name)) THEN
                            v_locked := v_locked || v_name;
                        ELSE
                            v_admit := false;
                        END IF;
                    END IF;
                    IF v_admit AND p_max_running[v_i] IS NOT NULL THEN
                        IF v_running[v_i] IS NULL THEN
                            SELECT count(*) INTO v_count FROM {schema}.jobs AS j
                            WHERE j.name = v_name AND j.state = 'running';
                            v_running[v_i] := v_count;
                        END IF;
                        v_admit := v_running[v_i] < p_max_running[v_i];
                    END IF;
                    IF v_admit AND p_rates[v_i] IS NOT NULL THEN
                        IF v_tokens[v_i] IS NULL THEN
                            -- As workhorse.backends.common.refill; a new bucket starts full.
                            SELECT least(p_bursts[v_i]::double precision,
                                         b.tokens + greatest(0, v_now - b.updated) * p_rates[v_i])
                            INTO v_refilled FROM {schema}.buckets AS b WHERE b.name = v_name;
                            v_tokens[v_i] := coalesce(v_refilled, p_bursts[v_i]);
                        END IF;
                        v_admit := v_tokens[v_i] >= 1;
                        IF v_admit THEN
                            v_tokens[v_i] := v_tokens[v_i] - 1;
                        END IF;
                    END IF;
                END IF;

                IF NOT v_admit THEN
                    v_blocked := v_blocked || v_name;
                    IF NOT v_around THEN
                        v_rescan := true;
                        EXIT;
                    END IF;
                    CONTINUE;
                END IF;

                v_taken := v_taken + 1;
                UPDATE {schema}.jobs AS j
                SET state = 'running', attempt = j.attempt + 1, token = p_tokens[v_taken],
                    lease_owner = p_worker, lease_expires_at = v_now + p_lease,
                    started_at = v_now, finished_at = NULL, cancel_requested = false,
                    checkin = NULL, checkin_at = NULL
                WHERE j.seq = v_seq
                RETURNING j.* INTO v_job;
                IF v_i IS NOT NULL AND v_running[v_i] IS NOT NULL THEN
                    v_running[v_i] := v_running[v_i] + 1;
                END IF;
                RETURN NEXT v_job;
            END LOOP;
            CLOSE v_cursor;
            EXIT WHEN NOT v_rescan OR v_taken >= p_limit;
            v_around := true;
        END LOOP;
    END LOOP;

    FOR v_i IN 1 .. coalesce(cardinality(p_names), 0) LOOP
        IF v_tokens[v_i] IS NOT NULL THEN
            INSERT INTO {schema}.buckets AS b (name, tokens, updated)
            VALUES (p_names[v_i], v_tokens[v_i], v_now)
            ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated;
        END IF;
    END LOOP;
END;
$$;

-- Ends runs: each position of the arrays is one move of a job RUNNING under its token,
-- picked by p_states: 'succeeded' or 'cancelled' (ack), 'retrying' (due at p_run_ats),
-- 'dead' (deleted if p_keeps is false) or 'ready' (release, its attempt not counted).
-- Returns one boolean per move: false where the job is not RUNNING under that token.
CREATE FUNCTION {schema}.settle(
    p_ids text[], p_tokens text[], p_states text[], p_statuses integer[], p_results bytea[],
    p_run_ats double precision[], p_errors text[], p_tracebacks text[], p_keeps boolean[]
) RETURNS boolean[]
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := {schema}.epoch();
    v_done boolean[] := ARRAY[]::boolean[];
    v_state text;
    v_queue text;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        v_state := p_states[i];
        v_queue := NULL;
        IF v_state = 'dead' AND NOT p_keeps[i] THEN
            DELETE FROM {schema}.jobs AS j
            WHERE j.id = p_ids[i] AND j.state = 'running' AND j.token = p_tokens[i]
            RETURNING j.queue INTO v_queue;
        ELSE
            UPDATE {schema}.jobs AS j
            SET state = v_state,
                status = CASE WHEN v_state = 'ready' THEN j.status ELSE p_statuses[i] END,
                result = CASE WHEN v_state IN ('succeeded', 'cancelled') THEN p_results[i]
                              ELSE j.result END,
                error = CASE v_state WHEN 'succeeded' THEN NULL
                                     WHEN 'cancelled' THEN 'cancelled'
                                     WHEN 'ready' THEN j.error
                                     ELSE p_errors[i] END,
                traceback = CASE WHEN v_state IN ('retrying', 'dead') THEN p_tracebacks[i]
                                 WHEN v_state = 'succeeded' THEN NULL
                                 ELSE j.traceback END,
                run_at = CASE WHEN v_state = 'retrying' THEN p_run_ats[i] ELSE j.run_at END,
                finished_at = CASE WHEN v_state = 'ready' THEN j.finished_at ELSE v_now END,
                attempt = CASE WHEN v_state = 'ready' THEN j.attempt - 1 ELSE j.attempt END,
                lease_owner = NULL, lease_expires_at = NULL, token = NULL
            WHERE j.id = p_ids[i] AND j.state = 'running' AND j.token = p_tokens[i]
            RETURNING j.queue INTO v_queue;
        END IF;
        v_done := v_done || (v_queue IS NOT NULL);
        IF v_queue IS NOT NULL THEN
            -- A job leaving RUNNING may free a concurrency slot: either message wakes the
            -- workers of its queue.
            PERFORM {schema}.notify(CASE WHEN v_state IN ('retrying', 'ready')
                                         THEN jsonb_build_array('w', v_queue)
                                         ELSE jsonb_build_array('f', p_ids[i], v_queue) END);
        END IF;
    END LOOP;
    RETURN v_done;
END;
$$;

-- Cancels one job: SCHEDULED/READY/RETRYING become CANCELLED with p_status; RUNNING is
-- flagged cancel_requested. Returns the state afterwards, NULL if there is no such job.
CREATE FUNCTION {schema}.cancel(p_id text, p_status integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_queue text;
BEGIN
    -- FOR UPDATE waits for a claim that holds the row, then sees the job RUNNING and flags it.
    SELECT j.state, j.queue INTO v_state, v_queue FROM {schema}.jobs AS j
    WHERE j.id = p_id FOR UPDATE;
    IF v_state = 'running' THEN
        UPDATE {schema}.jobs SET cancel_requested = true WHERE id = p_id;
    ELSIF v_state IN ('scheduled', 'ready', 'retrying') THEN
        UPDATE {schema}.jobs
        SET state = 'cancelled', status = p_status, error = 'cancelled',
            finished_at = {schema}.epoch()
        WHERE id = p_id;
        PERFORM {schema}.notify(jsonb_build_array('f', p_id, v_queue));
        v_state := 'cancelled';
    END IF;
    RETURN v_state;
END;
$$;

-- Cancels every live job of p_queue and p_name (NULL: any); returns how many.
CREATE FUNCTION {schema}.cancel_all(p_queue text, p_name text, p_status integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_cancelled bigint;
    v_flagged bigint;
BEGIN
    UPDATE {schema}.jobs
    SET state = 'cancelled', status = p_status, error = 'cancelled',
        finished_at = {schema}.epoch()
    WHERE state IN ('scheduled', 'ready', 'retrying')
      AND (p_queue IS NULL OR queue = p_queue) AND (p_name IS NULL OR name = p_name);
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;
    -- A statement of its own, so a fresh snapshot: a job that a claim leased while the update
    -- above waited for its row is RUNNING by now, and is flagged here.
    UPDATE {schema}.jobs SET cancel_requested = true
    WHERE state = 'running'
      AND (p_queue IS NULL OR queue = p_queue) AND (p_name IS NULL OR name = p_name);
    GET DIAGNOSTICS v_flagged = ROW_COUNT;
    IF v_cancelled > 0 THEN
        -- One message rather than one per job: every wait_finished looks at its job again.
        PERFORM {schema}.notify(jsonb_build_array('c'));
    END IF;
    RETURN v_cancelled + v_flagged;
END;
$$;
