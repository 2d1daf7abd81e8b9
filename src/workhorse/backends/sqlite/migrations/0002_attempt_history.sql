-- The history of each job's failed attempts, for people who ask what went wrong: a JSON list
-- of {attempt, status, error, traceback, started_at, finished_at}, oldest first, the latest
-- 10 only (base.HISTORY_LIMIT). A trigger appends to it in the same statement (so the same
-- transaction) as the move that ends an attempt: RUNNING -> RETRYING or DEAD, and RUNNING ->
-- READY by reap, which keeps the attempt count (release, which takes it back, is no
-- failure). A succeeded or cancelled run is not recorded: the job's own fields show it.

ALTER TABLE workhorse_jobs ADD COLUMN attempts TEXT;

CREATE TRIGGER workhorse_jobs_attempt_failed
AFTER UPDATE OF state ON workhorse_jobs
WHEN OLD.state = 'running'
  AND (NEW.state IN ('retrying', 'dead') OR (NEW.state = 'ready' AND NEW.attempt = OLD.attempt))
BEGIN
    UPDATE workhorse_jobs SET attempts = (
        SELECT CASE WHEN json_array_length(h) > 10 THEN json_remove(h, '$[0]') ELSE h END
        FROM (SELECT json_insert(coalesce(NEW.attempts, '[]'), '$[#]', json_object(
            'attempt', NEW.attempt,
            'status', CASE WHEN NEW.state = 'ready' THEN NULL ELSE NEW.status END,
            'error', NEW.error,
            'traceback', NEW.traceback,
            'started_at', NEW.started_at,
            'finished_at', CASE WHEN NEW.state = 'ready'
                                THEN (julianday('now') - 2440587.5) * 86400.0
                                ELSE NEW.finished_at END
        )) AS h)
    )
    WHERE seq = NEW.seq;
END;
