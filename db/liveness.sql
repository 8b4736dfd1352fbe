-- Liveness: the heartbeats of our processes (workers.engine.liveness). Each query is
-- named by its `-- name:` line.

-- name: beat
-- A process says it is alive, and what it is doing. Its first beat inserts its row.
INSERT INTO job_processes AS p (process_id, kind, host, pid, version, started_at, beat_at,
                                queues, threads, running)
VALUES (%(process_id)s, %(kind)s, %(host)s, %(pid)s, %(version)s, %(started_at)s,
        clock_timestamp(), %(queues)s, %(threads)s, %(running)s)
ON CONFLICT (process_id) DO UPDATE
SET beat_at = excluded.beat_at, queues = excluded.queues, threads = excluded.threads,
    running = excluded.running, updated_at = excluded.beat_at;

-- name: forget_the_long_dead
-- Rows of processes that died without a clean exit are kept a while, so that health can
-- name what is gone; then forgotten.
DELETE FROM job_processes WHERE beat_at < clock_timestamp() - %(forget_after)s;

-- name: leave
-- A clean exit.
DELETE FROM job_processes WHERE process_id = %(process_id)s;

-- name: processes
-- Every process known, live or stale, with the age of its last beat.
SELECT process_id, kind, host, pid, version, started_at, beat_at, queues, threads, running,
       extract(epoch FROM clock_timestamp() - beat_at)::float8 AS beat_age,
       beat_at >= clock_timestamp() - %(stale_after)s AS alive
FROM job_processes
ORDER BY kind, host, pid;
