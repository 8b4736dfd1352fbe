-- call_cleanup's own queries (workers.jobs.call_cleanup); its tick is coin_deduction's.

-- name: calls_not_ongoing
-- Of these call ids (from Redis), the calls that have ended. An id with no row at all is
-- left alone: the API may write a call's hash before its row commits.
SELECT call_id FROM user_calls WHERE call_id = ANY(%(ids)s::integer[]) AND status <> 'ongoing';
