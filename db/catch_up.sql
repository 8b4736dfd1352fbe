-- catch_up: the missed-run policy (workers.engine.catch_up). Each query is named by its
-- `-- name:` line.

-- name: missed
-- A candidate slot of a job (its latest, or each in its catch-up window) was missed when
-- no attempt of it succeeded or is running: no row at all (the scheduler was down, the
-- message was lost, or dropped as stale), or a last attempt that was skipped, abandoned,
-- or failed with attempts to spare. Paused jobs wait.
SELECT c.job, c.scheduled_for
FROM unnest(%(jobs)s::text[], %(slots)s::timestamptz[], %(max_attempts)s::int[])
     AS c (job, scheduled_for, max_attempts)
LEFT JOIN job_runs r ON r.job = c.job AND r.scheduled_for = c.scheduled_for
LEFT JOIN job_settings s ON s.job = c.job
WHERE NOT coalesce(s.paused, false)
  AND (r.run_id IS NULL
       OR r.status IN ('skipped', 'abandoned')
       OR (r.status = 'failed' AND r.attempt < c.max_attempts))
ORDER BY c.job, c.scheduled_for;
