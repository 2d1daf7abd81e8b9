-- The history of each job's failed attempts, for people who ask what went wrong: a JSON list
-- of {attempt, status, error, traceback, started_at, finished_at}, oldest first, the latest
-- 10 only (base.HISTORY_LIMIT). A trigger appends to it in the same statement (so the same
-- transaction) as the move that ends an attempt: RUNNING -> RETRYING or DEAD, and RUNNING ->
-- READY by reap, which keeps the attempt count (release, which takes it back, is no
-- failure). A succeeded or cancelled run is not recorded: the job's own fields show it.

ALTER TABLE {schema}.jobs ADD COLUMN attempts jsonb;

CREATE FUNCTION {schema}.record_failed_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_history jsonb;
BEGIN
    v_history := coalesce(NEW.attempts, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
        'attempt', NEW.attempt,
        'status', CASE WHEN NEW.state = 'ready' THEN NULL ELSE NEW.status END,
        'error', NEW.error,
        'traceback', NEW.traceback,
        'started_at', NEW.started_at,
        'finished_at', CASE WHEN NEW.state = 'ready' THEN {schema}.epoch()
                            ELSE NEW.finished_at END));
    WHILE jsonb_array_length(v_history) > 10 LOOP
        v_history := v_history - 0;
    END LOOP;
    NEW.attempts := v_history;
    RETURN NEW;
END;
$$;

CREATE TRIGGER jobs_attempt_failed
BEFORE UPDATE OF state ON {schema}.jobs
FOR EACH ROW
WHEN (OLD.state = 'running' AND (NEW.state IN ('retrying', 'dead')
                                 OR (NEW.state = 'ready' AND NEW.attempt = OLD.attempt)))
EXECUTE FUNCTION {schema}.record_failed_attempt();
