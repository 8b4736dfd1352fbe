-- log_rotation (workers.jobs.log_rotation). Each query is named by its `-- name:` line.

-- name: prune_job_runs
-- A run record is kept for job_runs_retention_days (days of 24 hours) after its slot, then
-- deleted, whatever its outcome. A 'running' attempt is never deleted however old it is:
-- its worker may still be finishing, and mark_abandoned must see it to free the slot.
DELETE FROM job_runs
WHERE scheduled_for < %(scheduled_for)s - make_interval(hours => 24 * %(retention_days)s::int)
  AND status <> 'running';
