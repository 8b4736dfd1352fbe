-- What `python -m workers metrics` reads at each scrape (workers.observability.metrics).
-- Every query reads a few rows: the counters are kept as runs end (job_run_totals and
-- job_run_figures, schema.sql), the last runs are found by the (job, scheduled_for) index.

-- name: run_totals
-- Every attempt that ended, by job, status and duration bucket.
SELECT job, status, le, runs, seconds
FROM job_run_totals
ORDER BY job, status, le;

-- name: run_figures
-- The sums of the numbers in each job's succeeded results.
SELECT job, figure, total
FROM job_run_figures
ORDER BY job, figure;

-- name: last_runs
-- Per job of the table: when its last success ended, and how late its latest slot's run
-- started (started_at - scheduled_for: the scheduler's and the queue's delay together).
SELECT j.job, success.finished_at AS last_success,
       extract(epoch FROM latest.started_at - latest.scheduled_for) AS lag_seconds
FROM unnest(%(jobs)s::text[]) AS j(job)
LEFT JOIN LATERAL (SELECT r.finished_at FROM job_runs r
                   WHERE r.job = j.job AND r.status = 'succeeded'
                   ORDER BY r.scheduled_for DESC LIMIT 1) success ON true
LEFT JOIN LATERAL (SELECT r.started_at, r.scheduled_for FROM job_runs r
                   WHERE r.job = j.job
                   ORDER BY r.scheduled_for DESC LIMIT 1) latest ON true;

-- name: ongoing_calls
SELECT call_type, count(*) AS calls
FROM user_calls
WHERE status = 'ongoing'
GROUP BY call_type;
