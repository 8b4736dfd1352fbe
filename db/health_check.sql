-- health_check: the record of each run's checks (workers.jobs.health_check). Each query is
-- named by its `-- name:` line.

-- name: previous
-- The checks of the run before this slot: what a change of verdict is measured against.
SELECT checked_for, checks FROM health_checks
WHERE checked_for < %(slot)s
ORDER BY checked_for DESC
LIMIT 1;

-- name: record
-- One row per slot. A slot recorded already (a run replayed after its commit) keeps its
-- row: its alerts were told then.
INSERT INTO health_checks (checked_for, verdict, checks)
VALUES (%(slot)s, %(verdict)s, %(checks)s)
ON CONFLICT (checked_for) DO NOTHING
RETURNING checked_for;
