-- The run contract's queries (workers.engine.runs). Each query is named by its `-- name:` line.

-- name: mark_abandoned
-- A running attempt is abandoned when its database backend is gone (the worker died
-- and its connection with it: the lock and the writes rolled back) or it is past its
-- deadline (behind a pooler the backend may outlive the worker).
UPDATE job_runs r
SET status = 'abandoned',
    finished_at = clock_timestamp(),
    duration = clock_timestamp() - r.started_at,
    error = CASE WHEN r.deadline < clock_timestamp() THEN 'past its deadline'
                 ELSE 'its worker and database session are gone' END,
    updated_at = clock_timestamp()
WHERE r.status = 'running'
  AND r.job = ANY(%(jobs)s)
  AND (r.deadline < clock_timestamp()
       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                      WHERE a.pid = r.backend_pid
                        AND (a.backend_start IS NULL OR a.backend_start = r.backend_start)))
RETURNING r.run_id;

-- name: claim
-- A run claims its (job, slot): a new slot, or one whose last attempt failed, was skipped
-- or was abandoned. A slot that succeeded, or is running elsewhere, returns no row: the
-- caller does nothing, so a duplicate message for the slot is a no-op.
INSERT INTO job_runs AS r (job, scheduled_for, status, attempt, trigger, message_id,
                           started_at, deadline, host, pid, backend_pid, backend_start)
SELECT %(job)s, %(scheduled_for)s, 'running', 1, %(trigger)s, %(message_id)s,
       clock_timestamp(), clock_timestamp() + %(deadline)s, %(host)s, %(pid)s,
       a.pid, a.backend_start
FROM pg_stat_activity a
WHERE a.pid = pg_backend_pid()
ON CONFLICT (job, scheduled_for) DO UPDATE
SET status = 'running',
    attempt = r.attempt + 1,
    trigger = excluded.trigger,
    message_id = excluded.message_id,
    started_at = excluded.started_at,
    deadline = excluded.deadline,
    host = excluded.host,
    pid = excluded.pid,
    backend_pid = excluded.backend_pid,
    backend_start = excluded.backend_start,
    finished_at = NULL,
    duration = NULL,
    result = NULL,
    error = NULL,
    skip_reason = NULL,
    updated_at = clock_timestamp()
WHERE r.status IN ('failed', 'skipped', 'abandoned')
RETURNING r.run_id, r.attempt;

-- name: last_attempt
-- What became of a slot that could not be claimed.
SELECT status, attempt, host, pid FROM job_runs
WHERE job = %(job)s AND scheduled_for = %(scheduled_for)s;

-- name: slot_outcomes
-- What became of each of these (job, slot)s: for the dead letters that asked for them.
SELECT r.job, r.scheduled_for, r.status, r.attempt, r.error
FROM unnest(%(jobs)s::text[], %(slots)s::timestamptz[]) AS c (job, scheduled_for)
JOIN job_runs r ON r.job = c.job AND r.scheduled_for = c.scheduled_for;

-- name: previous_finished
-- The latest slot of a job before this one that succeeded or failed: whether a failure
-- opens an incident or continues one (the alert webhook).
SELECT scheduled_for, status FROM job_runs
WHERE job = %(job)s AND scheduled_for < %(scheduled_for)s
  AND status IN ('succeeded', 'failed')
ORDER BY scheduled_for DESC
LIMIT 1;

-- name: begin_work
-- First statement of the work transaction: its time limits, then the job's lock.
-- The lock is transaction-scoped: commit, rollback or a lost connection releases it,
-- together with the writes it protects. It never waits.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('idle_in_transaction_session_timeout', %(statement_timeout)s, true),
       pg_try_advisory_xact_lock(%(namespace)s, %(lock_id)s) AS locked;

-- name: job_settings
SELECT paused, overrides FROM job_settings WHERE job = %(job)s;

-- name: finish
-- Close an attempt. On success this runs inside the work transaction, so 'succeeded'
-- commits together with the job's writes or not at all.
UPDATE job_runs
SET status = %(status)s,
    finished_at = clock_timestamp(),
    duration = clock_timestamp() - started_at,
    result = %(result)s,
    error = %(error)s,
    skip_reason = %(skip_reason)s,
    updated_at = clock_timestamp()
WHERE run_id = %(run_id)s;

-- name: latest_runs
-- The last attempt of each job, for `status`.
SELECT DISTINCT ON (job) job, scheduled_for, status, attempt, started_at, finished_at,
       duration, error, skip_reason
FROM job_runs
ORDER BY job, started_at DESC;

-- name: paused_jobs
SELECT job FROM job_settings WHERE paused;

-- name: history
-- Runs newest first, of one job or of all (job = NULL).
SELECT job, scheduled_for, status, attempt, trigger, started_at, duration, host, pid,
       result, error, skip_reason
FROM job_runs
WHERE %(job)s::text IS NULL OR job = %(job)s
ORDER BY started_at DESC, run_id DESC
LIMIT %(limit)s;

-- name: set_paused
INSERT INTO job_settings AS s (job, paused, paused_at)
VALUES (%(job)s, %(paused)s, CASE WHEN %(paused)s THEN now() END)
ON CONFLICT (job) DO UPDATE
SET paused = excluded.paused, paused_at = excluded.paused_at, updated_at = now()
RETURNING (SELECT paused FROM job_settings WHERE job = %(job)s) AS was_paused;

-- name: ensure_job_settings
INSERT INTO job_settings (job) VALUES (%(job)s) ON CONFLICT (job) DO NOTHING;

-- name: lock_overrides
-- A job's overrides, its row locked until the transaction ends: two operators changing
-- them at once each see the other's change, never overwrite it unseen.
SELECT overrides FROM job_settings WHERE job = %(job)s FOR UPDATE;

-- name: write_overrides
UPDATE job_settings SET overrides = %(overrides)s, updated_at = now() WHERE job = %(job)s;
