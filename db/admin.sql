-- The admin's reads and its audit (workers.admin). Each query is named by its `-- name:`
-- line. Lists are keyset-paginated: newest first, `before` the last id of the previous
-- page (NULL for the first), at most `limit` rows (the caller asks for one more to know
-- whether another page follows).

-- name: last_runs
-- Per job of the table: its latest slot's attempt and its paused flag and overrides, by
-- the (job, scheduled_for) index however long the history.
SELECT j.job, coalesce(s.paused, false) AS paused, coalesce(s.overrides, '{}') AS overrides,
       r.run_id, r.scheduled_for, r.status, r.attempt, r.trigger, r.started_at,
       r.finished_at, extract(epoch FROM r.duration)::float8 AS duration_s, r.error,
       r.skip_reason
FROM unnest(%(jobs)s::text[]) WITH ORDINALITY AS j(job, n)
LEFT JOIN job_settings s ON s.job = j.job
LEFT JOIN LATERAL (SELECT * FROM job_runs r WHERE r.job = j.job
                   ORDER BY r.scheduled_for DESC LIMIT 1) r ON true
ORDER BY j.n;

-- name: runs
-- Runs, newest first, filtered by job, status, trigger and slot range (each NULL: any).
SELECT run_id, job, scheduled_for, status, attempt, trigger, started_at, finished_at,
       extract(epoch FROM duration)::float8 AS duration_s, host, pid, error, skip_reason
FROM job_runs
WHERE (%(before)s::bigint IS NULL OR run_id < %(before)s)
  AND (%(job)s::text IS NULL OR job = %(job)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(trigger)s::text IS NULL OR trigger = %(trigger)s)
  AND (%(since)s::timestamptz IS NULL OR scheduled_for >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR scheduled_for < %(until)s)
ORDER BY run_id DESC
LIMIT %(limit)s;

-- name: run
SELECT run_id, job, scheduled_for, status, attempt, trigger, message_id, started_at,
       finished_at, extract(epoch FROM duration)::float8 AS duration_s, host, pid,
       deadline, result, error, skip_reason
FROM job_runs
WHERE run_id = %(run_id)s;

-- name: record
INSERT INTO admin_audit (actor, role, via, action, target, params, outcome, detail, address,
                         user_agent)
VALUES (%(actor)s, %(role)s, %(via)s, %(action)s, %(target)s, %(params)s, %(outcome)s,
        %(detail)s, %(address)s, %(user_agent)s)
RETURNING audit_id, at;

-- name: audit
SELECT audit_id, at, actor, role, via, action, target, params, outcome, detail, address,
       user_agent
FROM admin_audit
WHERE (%(before)s::bigint IS NULL OR audit_id < %(before)s)
ORDER BY audit_id DESC
LIMIT %(limit)s;
