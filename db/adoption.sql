-- Adopting an existing Saathii database (workers.engine.schema, workers.engine.adoption):
-- the calls its API left 'ongoing' with silent parties. Each query is named by its
-- `-- name:` line.

-- name: hold_adopted_calls
-- At the first adoption of a database, every call still 'ongoing' whose parties have been
-- silent past the heartbeat timeout is held from billing: nothing shows its minutes were
-- talked, and they are from before the workers. What billing it would have charged (its
-- owed minutes by the billing rules, within the maximum length, at its rate) is recorded
-- as the coins at stake. The held calls, counted.
WITH held AS (
    INSERT INTO adopted_calls (call_id, last_seen, coins_at_stake)
    SELECT b.call_id, b.seen, greatest(b.due - b.paid, 0) * b.rate
    FROM ongoing_calls_at(now(), %(heartbeat)s, %(slack)s, %(max_minutes)s) b
    WHERE b.silent
    ON CONFLICT (call_id) DO NOTHING
    RETURNING call_id, coins_at_stake
)
SELECT count(*) AS calls, min(c.start_time) AS oldest,
       coalesce(sum(h.coins_at_stake), 0)::bigint AS coins
FROM held h JOIN user_calls c USING (call_id);

-- name: held_calls
-- The calls held since adoption that are still 'ongoing', oldest first.
SELECT a.call_id, c.user_id AS caller_id, c.listener_id, c.call_type, c.start_time,
       a.last_seen, a.coins_at_stake, c.coins_spent
FROM adopted_calls a
JOIN user_calls c USING (call_id)
WHERE c.status = 'ongoing'
ORDER BY c.start_time, a.call_id;

-- name: end_held_calls
-- An operator's decision on the held calls: each ends at its parties' last sighting (never
-- before it started), charged nothing more: 'dropped' for 'adoption_backlog', its billing
-- closed on that sighting, so that a tick settles it (its listener is paid the minutes it
-- had paid). Its parties are freed, unless on another ongoing call. (The statement sees the
-- calls as they were before it: the ones it ends are still 'ongoing' there.)
WITH ended AS (
    UPDATE user_calls c
    SET status = 'dropped', end_reason = 'adoption_backlog',
        end_time = greatest(c.start_time, coalesce(a.last_seen, c.start_time)),
        duration_seconds = floor(extract(epoch FROM greatest(c.start_time,
                                 coalesce(a.last_seen, c.start_time)) - c.start_time))::integer,
        duration_minutes = c.coins_spent / call_rate(c.call_type),
        parties_last_seen = a.last_seen, updated_at = now()
    FROM adopted_calls a
    WHERE a.call_id = c.call_id AND c.status = 'ongoing'
    RETURNING c.call_id, c.user_id, c.listener_id
),
marked AS (
    UPDATE adopted_calls a SET ended_at = now(), updated_at = now()
    FROM ended e WHERE a.call_id = e.call_id
),
freed AS (
    UPDATE user_status s SET is_busy = false, busy_until = NULL, wait_time = NULL,
                             updated_at = now()
    WHERE s.user_id IN (SELECT user_id FROM ended UNION SELECT listener_id FROM ended)
      AND NOT EXISTS (SELECT 1 FROM user_calls c WHERE c.status = 'ongoing'
                      AND (c.user_id = s.user_id OR c.listener_id = s.user_id)
                      AND c.call_id NOT IN (SELECT call_id FROM ended))
)
SELECT count(*) AS ended FROM ended;
