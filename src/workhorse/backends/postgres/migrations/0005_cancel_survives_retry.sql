-- A cancel is not lost when its job's run fails before its worker heard of the cancel. A
-- retry (settle with state 'retrying') of a job whose cancel was asked for ends it
-- CANCELLED, as a release does since 0003_cancel_survives_release.sql, instead of
-- scheduling another attempt, whose claim would clear the flag and run the job again.
--
-- settle as in 0003, with the cancel check made for retries too.

CREATE OR REPLACE FUNCTION {schema}.settle(
    p_ids text[], p_tokens text[], p_states text[], p_statuses integer[], p_results bytea[],
    p_run_ats double precision[], p_errors text[], p_tracebacks text[], p_keeps boolean[]
) RETURNS boolean[]
LANGUAGE plpgsql AS $$
DECLARE
    v_now double precision := {schema}.epoch();
    v_done boolean[] := ARRAY[]::boolean[];
    v_state text;
    v_status integer;
    v_result bytea;
    v_cancel boolean;
    v_queue text;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        v_state := p_states[i];
        v_status := p_statuses[i];
        v_result := p_results[i];
        v_queue := NULL;
        IF v_state IN ('ready', 'retrying') THEN
            -- Locked whatever its flag, so that no cancel can flag it between this look and
            -- the move below.
            SELECT j.cancel_requested INTO v_cancel FROM {schema}.jobs AS j
            WHERE j.id = p_ids[i] AND j.state = 'running' AND j.token = p_tokens[i]
            FOR UPDATE;
            IF FOUND AND v_cancel THEN
                v_state := 'cancelled';
                v_status := 499;
                v_result := NULL;
            END IF;
        END IF;
        IF v_state = 'dead' AND NOT p_keeps[i] THEN
            DELETE FROM {schema}.jobs AS j
            WHERE j.id = p_ids[i] AND j.state = 'running' AND j.token = p_tokens[i]
            RETURNING j.queue INTO v_queue;
        ELSE
            UPDATE {schema}.jobs AS j
            SET state = v_state,
                status = CASE WHEN v_state = 'ready' THEN j.status ELSE v_status END,
                result = CASE WHEN v_state IN ('succeeded', 'cancelled') THEN v_result
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
