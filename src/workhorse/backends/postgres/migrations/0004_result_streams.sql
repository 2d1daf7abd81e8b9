-- Result streams (backends/postgres/results.py): while a result feed listens anywhere, every
-- job that moves to SUCCEEDED, DEAD or CANCELLED is told on the results channel, by a
-- trigger, so that every path that finishes a job (settle, cancel, cancel_all, reap, and
-- moves added later) tells it without each having to remember.
--
-- An open feed keeps the one row of result_listening in the future; with it in the past,
-- a finish costs the trigger's look at that row and nothing more.

CREATE TABLE {schema}.result_listening (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- Epoch seconds until which some feed is known to listen.
    until double precision NOT NULL
);

-- The channel of result messages: a second one beside the work channel, so that workers'
-- listeners never receive results. Within PostgreSQL's 63 bytes.
CREATE FUNCTION {schema}.results_channel() RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN octet_length({channel}) <= 55 THEN {channel} || '_results'
                      ELSE 'workhorse_results_' || md5({channel}) END $$;

-- The message: {id, name, queue, state, status, attempt, finished_at, error?, result?}
-- with the result as JSON text. A NOTIFY payload must stay under 8000 bytes: past 7800 the
-- result and error are left out and "more" is true, and the feed reads the job instead.
CREATE FUNCTION {schema}.tell_result() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_message jsonb;
    v_text text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.result_listening
                   WHERE until > {schema}.epoch()) THEN
        RETURN NULL;
    END IF;
    v_message := jsonb_build_object(
        'id', NEW.id, 'name', NEW.name, 'queue', NEW.queue, 'state', NEW.state,
        'status', NEW.status, 'attempt', NEW.attempt, 'finished_at', NEW.finished_at);
    IF NEW.result IS NOT NULL AND octet_length(NEW.result) > 7800 THEN
        v_text := (v_message || '{"more": true}'::jsonb)::text;
    ELSE
        v_text := (v_message || jsonb_strip_nulls(jsonb_build_object(
            'error', NEW.error, 'result', convert_from(NEW.result, 'UTF8'))))::text;
        IF octet_length(v_text) > 7800 THEN
            v_text := (v_message || '{"more": true}'::jsonb)::text;
        END IF;
    END IF;
    PERFORM pg_notify({schema}.results_channel(), v_text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER tell_result AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'dead', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION {schema}.tell_result();
