-- presence_cleanup: presence hygiene (workers.jobs.presence_cleanup). Each query is
-- named by its `-- name:` line.
-- %(now)s is always the run's logical time, never the clock: a late or repeated run judges
-- the same instant the same way. updated_at is bookkeeping (when the row was written), not
-- a rule, so it takes the transaction's time.

-- name: mark_inactive_users_offline
-- A user is offline once their last heartbeat (last_seen) is more than inactive_minutes
-- before the logical time; exactly inactive_minutes ago is still online. A user never seen
-- (last_seen NULL) cannot be online. A heartbeat committed while this runs wins: the row
-- is re-checked after its lock is taken, and a fresh last_seen no longer matches. The
-- user is marked as set offline by this job, at the logical time (offline_marked_at).
WITH offline AS (
    UPDATE user_status
    SET is_online = false,
        offline_marked_at = %(now)s,
        updated_at = now()
    WHERE is_online
      AND (last_seen IS NULL
           OR last_seen < %(now)s - make_interval(mins => %(inactive_minutes)s))
    RETURNING user_id
)
SELECT user_id FROM offline ORDER BY user_id;

-- name: back_online
-- A user this job set offline who has been seen since (and within inactive_minutes) is
-- online again: the API's heartbeat moves last_seen only, and only its login sets
-- is_online, so a listener who came back would stay off the feed. A user the API's logout
-- set offline carries no mark of this job and stays offline.
WITH back AS (
    UPDATE user_status
    SET is_online = true,
        offline_marked_at = NULL,
        updated_at = now()
    WHERE NOT is_online
      AND offline_marked_at IS NOT NULL
      AND last_seen > offline_marked_at
      AND last_seen >= %(now)s - make_interval(mins => %(inactive_minutes)s)
    RETURNING user_id
)
SELECT user_id FROM back ORDER BY user_id;

-- name: forget_offline_marks
-- A user online again by other means (the API's login) no longer carries the mark: a later
-- logout must keep them offline.
UPDATE user_status SET offline_marked_at = NULL
WHERE is_online AND offline_marked_at IS NOT NULL;

-- name: cleanup_expired_busy_status
-- A busy state ends when it has expired at the logical time: its busy_until has passed,
-- or, where there is none (the API sets none), the wait_time the API gave at the start of
-- the user's latest call (the minutes the caller's coins covered then) has gone by. Not
-- for a user who is the caller or the listener of an ongoing call: the call, not the
-- timer, keeps them busy until billing or call_cleanup ends it. Busy with neither is left
-- alone: nothing says when it ends. busy_until and wait_time are cleared with it. Two NOT
-- EXISTS (not one with OR) so each side can use its index.
WITH freed AS (
    UPDATE user_status s
    SET is_busy = false,
        busy_until = NULL,
        wait_time = NULL,
        updated_at = now()
    WHERE s.is_busy
      AND coalesce(s.busy_until,
                   (SELECT max(c.start_time) FROM user_calls c
                    WHERE c.user_id = s.user_id OR c.listener_id = s.user_id)
                   + s.wait_time * interval '1 minute') < %(now)s
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
