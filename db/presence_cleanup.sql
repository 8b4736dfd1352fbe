-- presence_cleanup: presence hygiene (workers.jobs.presence_cleanup). Each query is
-- named by its `-- name:` line.
-- %(now)s is always the run's logical time, never the clock: a late or repeated run judges
-- the same instant the same way. updated_at is bookkeeping (when the row was written), not
-- a rule, so it takes the transaction's time.

-- name: mark_inactive_users_offline
-- A user is offline once their last heartbeat (last_seen) is more than inactive_minutes
-- before the logical time; exactly inactive_minutes ago is still online. A user never seen
-- (last_seen NULL) cannot be online. A heartbeat committed while this runs wins: the row
-- is re-checked after its lock is taken, and a fresh last_seen no longer matches.
WITH offline AS (
    UPDATE user_status
    SET is_online = false,
        updated_at = now()
    WHERE is_online
      AND (last_seen IS NULL
           OR last_seen < %(now)s - make_interval(mins => %(inactive_minutes)s))
    RETURNING user_id
)
SELECT user_id FROM offline ORDER BY user_id;

-- name: cleanup_expired_busy_status
-- A busy state ends when its busy_until has passed at the logical time, except for a user
-- who is the caller or the listener of an ongoing call: the call, not the timer, keeps
-- them busy until call_cleanup ends it. Busy with no busy_until is left alone: nothing
-- says when it ends. Two NOT EXISTS (not one with OR) so each side can use its index.
WITH freed AS (
    UPDATE user_status s
    SET is_busy = false,
        busy_until = NULL,
        updated_at = now()
    WHERE s.is_busy
      AND s.busy_until < %(now)s
      AND NOT EXISTS (SELECT 1 FROM user_calls c
                      WHERE c.user_id = s.user_id AND c.status = 'ongoing')
      AND NOT EXISTS (SELECT 1 FROM user_calls c
                      WHERE c.listener_id = s.user_id AND c.status = 'ongoing')
    RETURNING s.user_id
)
SELECT user_id FROM freed ORDER BY user_id;

-- name: online_users_count
-- Online is the is_online flag as it stands (after this run's own updates).
SELECT count(*) AS n FROM user_status WHERE is_online;
