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
-- Runs, newest first, by keyset on run_id. The WHERE clause is the filters asked for
-- (workers.admin.api.read_runs: job, status, trigger, slot range, the cursor), only those,
-- so that the plan is made for them. The page's ids are found first, reading ids alone: an
-- index that holds the filter and the id answers it (one job's runs by (job, run_id), the
-- failures by job_runs_failed). Asked for whole rows at once, the planner would read the
-- primary key backwards, counting on a job's rows being spread evenly, and read past every
-- other job's runs when they are not (a daily job's: 160 ms at 1M rows, against 1 ms).
SELECT run_id, job, scheduled_for, status, attempt, trigger, started_at, finished_at,
       extract(epoch FROM duration)::float8 AS duration_s, host, pid, error, skip_reason
FROM job_runs
WHERE run_id IN (SELECT run_id FROM job_runs
                 WHERE {where}
                 ORDER BY run_id DESC
                 LIMIT %(limit)s)
ORDER BY run_id DESC;

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

-- name: people
-- Who is on Saathii now: one scan of each table.
SELECT (SELECT count(*) FROM users) AS users, r.customers, r.listeners, s.online, s.busy
FROM (SELECT count(*) FILTER (WHERE role = 'customer') AS customers,
             count(*) FILTER (WHERE role = 'listener') AS listeners
      FROM user_roles) r,
     (SELECT count(*) FILTER (WHERE is_online) AS online,
             count(*) FILTER (WHERE is_busy) AS busy
      FROM user_status) s;

-- name: ongoing_calls
SELECT call_type, count(*) AS calls
FROM user_calls
WHERE status = 'ongoing'
GROUP BY call_type;

-- name: billed_since
-- What the billing runs whose slot is at or after `since` charged and paid, read from
-- their results (a few rows a minute, by the (job, scheduled_for) index, however large the
-- ledger): the coins they charged and the rupees they paid listeners.
SELECT coalesce(sum((r.result ->> 'coins_charged')::bigint), 0) AS coins_charged,
       coalesce(sum((r.result ->> 'money_earned')::numeric), 0) AS money_earned
FROM unnest(%(jobs)s::text[]) AS j(job)
JOIN job_runs r ON r.job = j.job AND r.scheduled_for >= %(since)s AND r.status = 'succeeded';

-- name: ended_since
-- The calls the billing runs since `since` ended, by reason (their results' calls_ended),
-- and those the API ended that they closed (api_calls_closed).
SELECT reason, sum(calls)::bigint AS calls
FROM (SELECT e.key AS reason, e.value::bigint AS calls
      FROM unnest(%(jobs)s::text[]) AS j(job)
      JOIN job_runs r ON r.job = j.job AND r.scheduled_for >= %(since)s
                     AND r.status = 'succeeded'
      CROSS JOIN LATERAL jsonb_each_text(coalesce(r.result -> 'calls_ended', '{}')) e
      UNION ALL
      SELECT 'api', (r.result ->> 'api_calls_closed')::bigint
      FROM unnest(%(jobs)s::text[]) AS j(job)
      JOIN job_runs r ON r.job = j.job AND r.scheduled_for >= %(since)s
                     AND r.status = 'succeeded'
      WHERE (r.result ->> 'api_calls_closed')::bigint > 0) t
GROUP BY reason
ORDER BY reason;

-- name: badges_on
-- Today's badges, by badge.
SELECT badge, count(*) AS listeners
FROM listener_badges
WHERE date = %(day)s
GROUP BY badge
ORDER BY badge;
