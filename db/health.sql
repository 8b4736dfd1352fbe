-- Health: what the job table's runs say about each job now (workers.observability.overdue,
-- workers.observability.health). Each query is named by its `-- name:` line. `now` is a
-- parameter, not the database's clock, so that a check can be asked about any instant.

-- name: slot_states
-- Each job's latest due slot (past its grace), what became of it, and whether the job is
-- paused. A slot with no succeeded or running attempt is overdue, unless paused.
SELECT c.job, c.slot, r.status AS slot_status, coalesce(s.paused, false) AS paused
FROM unnest(%(jobs)s::text[], %(slots)s::timestamptz[]) AS c (job, slot)
LEFT JOIN job_runs r ON r.job = c.job AND r.scheduled_for = c.slot
LEFT JOIN job_settings s ON s.job = c.job;

-- name: overrunning
-- Attempts still running past their job's time limit: stuck, or their worker died.
SELECT r.job, r.scheduled_for, r.attempt, r.started_at, r.host, r.pid,
       extract(epoch FROM %(now)s - r.started_at)::float8 AS running_for
FROM job_runs r
JOIN unnest(%(jobs)s::text[], %(limits)s::interval[]) AS l (job, time_limit) ON l.job = r.job
WHERE r.status = 'running' AND r.started_at + l.time_limit < %(now)s
ORDER BY r.started_at;

-- name: recent_failures
-- The latest failed attempt of each job that started in [since, now]: an index range of
-- job_runs_latest per job, however many runs the table keeps.
SELECT j.job, f.scheduled_for, f.attempt, f.started_at, f.error
FROM unnest(%(jobs)s::text[]) AS j (job)
CROSS JOIN LATERAL (
    SELECT r.scheduled_for, r.attempt, r.started_at, r.error
    FROM job_runs r
    WHERE r.job = j.job AND r.status = 'failed'
      AND r.started_at >= %(since)s AND r.started_at <= %(now)s
    ORDER BY r.started_at DESC
    LIMIT 1
) f;
