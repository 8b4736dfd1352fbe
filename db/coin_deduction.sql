-- coin_deduction: per-minute billing and settlement (workers.jobs.coin_deduction). Every
-- statement takes the logical time of the tick, %(now)s, and never reads the clock for a
-- business rule. Where each ongoing call stands (paid, owed, silent) is the rule of
-- ongoing_calls_at() in schema.sql.
--
-- Which calls a statement acts on: with %(calls)s (an int[]), those calls only (a hang-up);
-- when NULL, every call of the shard. Billing is split into %(shards)s shards by user id:
-- shard %(shard)s charges and ends the calls of its callers (user_id mod shards = shard)
-- and pays its listeners (listener_id mod shards = shard). Every wallet a shard writes is
-- then a wallet of its own users: shards never wait on each other's wallets, and every
-- call of a caller is billed by one shard, oldest first. One shard of one is everything.
--
-- Shard membership is in_shard(id, shard, shards) (schema.sql): inlined by the planner,
-- it drops away with one shard and is estimated at a third of the rows with more.
--
-- A tick writes rows in user or call id order, as every writer here does, so that two
-- writers of the same rows wait on each other rather than deadlock.

-- name: tick_settings
-- Memory for the tick's sorts and hashes: a million calls fit without spilling to disk.
SELECT set_config('work_mem', %(work_mem)s, true);

-- name: link_first_minutes
-- The API charges minute 1 of a call with a 'spend' row that names no call, written just
-- before the call's row (its statements run one by one, without a transaction). Each call
-- of the shard not linked yet takes as its minute 1 the newest unnamed spend of its rate
-- from its caller's wallet written no later than the call started (a caller has one call
-- at a time: the API refuses a second), so that a call's spend rows add up to its
-- coins_spent. A call whose minute 1 is named already, or that has none (coins_spent 0:
-- the tick charges it), is marked linked as it is.
WITH unlinked AS (
    SELECT c.call_id, c.user_id, c.start_time, c.coins_spent, call_rate(c.call_type) AS rate
    FROM user_calls c
    WHERE NOT c.first_minute_linked
      AND in_shard(c.user_id, %(shard)s, %(shards)s)
      AND (%(calls)s::integer[] IS NULL OR c.call_id = ANY(%(calls)s::integer[]))
),
unnamed AS (
    SELECT u.call_id, t.transaction_id
    FROM unlinked u
    JOIN user_wallets w ON w.user_id = u.user_id
    CROSS JOIN LATERAL (
        SELECT t.transaction_id FROM user_transactions t
        WHERE t.wallet_id = w.wallet_id AND t.tx_type = 'spend' AND t.call_id IS NULL
          AND t.coins_change = -u.rate AND t.created_at <= u.start_time
        ORDER BY t.created_at DESC, t.transaction_id DESC
        LIMIT 1
    ) t
    WHERE u.coins_spent >= u.rate
      AND NOT EXISTS (SELECT 1 FROM user_transactions named
                      WHERE named.call_id = u.call_id AND named.tx_type = 'spend')
),
linked AS (
    UPDATE user_transactions t SET call_id = n.call_id, call_minute = 1, updated_at = now()
    FROM unnamed n
    WHERE t.transaction_id = n.transaction_id
    RETURNING t.call_id
),
marked AS (
    UPDATE user_calls c SET first_minute_linked = true
    FROM unlinked u
    WHERE c.call_id = u.call_id
)
SELECT count(*) AS linked FROM linked;

-- name: lock_calls
-- A tick first locks the calls it bills, in call id order, so that what it reads stays
-- true until it commits (the API's writes to these calls wait for it): its ongoing calls,
-- and the calls the API ended whose billing is not closed.
SELECT count(*) FILTER (WHERE status = 'ongoing') AS calls
FROM (SELECT status FROM user_calls
      WHERE (status = 'ongoing'
             OR (settled_at IS NULL AND end_reason IS NULL AND status <> 'ongoing'))
        AND in_shard(user_id, %(shard)s, %(shards)s)
        AND (%(calls)s::integer[] IS NULL OR call_id = ANY(%(calls)s::integer[]))
      ORDER BY call_id FOR UPDATE) c;

-- name: lock_callers_wallets
-- ... then the wallets of their callers, in user id order: balances cannot move under it.
SELECT count(*) AS wallets
FROM (SELECT 1 FROM user_wallets
      WHERE user_id IN (SELECT user_id FROM user_calls
                        WHERE (status = 'ongoing'
                               OR (settled_at IS NULL AND end_reason IS NULL
                                   AND status <> 'ongoing'))
                          AND in_shard(user_id, %(shard)s, %(shards)s)
                          AND (%(calls)s::integer[] IS NULL
                               OR call_id = ANY(%(calls)s::integer[])))
      ORDER BY user_id FOR UPDATE) w;

-- name: charge_owed_minutes
-- Charge every owed minute (ongoing_calls_at(), ended_calls_owing() in schema.sql) of
-- every call of the shard, oldest first per caller across all of their calls, while the
-- caller's balance covers the rate. Each (call, minute) is one 'spend' row, unique: a
-- duplicate, late or concurrent tick finds its minutes charged and charges nothing more.
-- coins_spent and the balance move by exactly what was inserted. The calls and wallets
-- are updated in id order: a million index lookups in key order walk the index and table
-- pages in turn, where a hash's order jumps between them (a million call updates took
-- 8.3 s in hash order, 4.6 s in call id order).
WITH standing AS (
    SELECT call_id, caller_id, start_time, rate, paid, due
    FROM ongoing_calls_at(%(now)s, %(heartbeat)s, %(slack)s, %(max_minutes)s)
    UNION ALL
    SELECT call_id, caller_id, start_time, rate, paid, due
    FROM ended_calls_owing(%(slack)s, %(max_minutes)s)
),
owed AS (
    SELECT b.call_id, b.caller_id, b.rate, minute,
           b.start_time + (minute - 1) * interval '1 minute' AS minute_start
    FROM standing b
    CROSS JOIN LATERAL generate_series(b.paid + 1, b.due) AS minute
    WHERE in_shard(b.caller_id, %(shard)s, %(shards)s)
      AND (%(calls)s::integer[] IS NULL OR b.call_id = ANY(%(calls)s::integer[]))
),
affordable AS (
    SELECT o.call_id, o.minute, o.rate, w.wallet_id
    FROM (SELECT owed.*,
                 sum(rate) OVER (PARTITION BY caller_id
                                 ORDER BY minute_start, call_id, minute) AS cumulative
          FROM owed) o
    JOIN user_wallets w ON w.user_id = o.caller_id
    WHERE o.cumulative <= w.balance_coins
),
spent AS (
    INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id, call_minute)
    SELECT wallet_id, 'spend', -rate, call_id, minute FROM affordable
    ON CONFLICT (call_id, call_minute) WHERE tx_type = 'spend' DO NOTHING
    RETURNING wallet_id, call_id, -coins_change AS coins
),
calls_charged AS (
    UPDATE user_calls c SET coins_spent = c.coins_spent + s.coins, updated_at = now()
    FROM (SELECT call_id, sum(coins) AS coins FROM spent GROUP BY call_id ORDER BY call_id) s
    WHERE c.call_id = s.call_id
),
wallets_debited AS (
    UPDATE user_wallets w SET balance_coins = w.balance_coins - s.coins, updated_at = now()
    FROM (SELECT wallet_id, sum(coins) AS coins FROM spent GROUP BY wallet_id ORDER BY wallet_id) s
    WHERE w.wallet_id = s.wallet_id
)
SELECT count(*) AS minutes_charged, coalesce(sum(coins), 0)::bigint AS coins_charged FROM spent;

-- name: close_api_ended_calls
-- A call the API ended has now been charged up to its end (as far as its caller's
-- balance covered): its billing is closed, recording the sighting it was billed against,
-- and it can be settled ('api' is why it ended: the API's hang-up).
UPDATE user_calls c
SET end_reason = 'api', parties_last_seen = o.seen, updated_at = now()
FROM ended_calls_owing(%(slack)s, %(max_minutes)s) o
WHERE c.call_id = o.call_id
  AND in_shard(o.caller_id, %(shard)s, %(shards)s)
  AND (%(calls)s::integer[] IS NULL OR o.call_id = ANY(%(calls)s::integer[]));

-- name: end_calls
-- End the ongoing calls (of the shard, or these calls) that can go no further, at the
-- earliest instant one of these rules gives:
-- 1. a party went silent (not seen for longer than the heartbeat timeout): at its last
--    sighting + the slack ('heartbeat_timeout');
-- 2. the call reached its maximum length: then ('max_duration');
-- 3. an owed minute is still unpaid after charging, because the caller's balance could not
--    cover it: at the tick, unless 1 or 2 came first; whenever this holds the reason is
--    'insufficient_coins';
-- 4. with %(end_expired)s (call_cleanup): a party's busy state has expired (busy_until,
--    else the API's wait_time from the call's start): at the tick ('expired');
-- 5. with %(hang_up)s (a party's hang-up of %(calls)s): 'completed' at the tick.
-- Every status is 'dropped' but a hang-up's. The owed minutes were charged first, by the
-- same tick. duration_minutes counts the minutes paid, parties_last_seen the sighting the
-- call was billed against, and a late tick ends a call no earlier than its last paid
-- minute began (call_end_time).
WITH standing AS (
    SELECT b.call_id, b.due > b.paid AS unpaid, b.seen,
           CASE WHEN b.silent THEN b.silent_end END AS silent_at,
           CASE WHEN b.over_max THEN b.max_end END AS max_at
    FROM ongoing_calls_at(%(now)s, %(heartbeat)s, %(slack)s, %(max_minutes)s) b
    WHERE in_shard(b.caller_id, %(shard)s, %(shards)s)
      AND (%(calls)s::integer[] IS NULL OR b.call_id = ANY(%(calls)s::integer[]))
),
rules AS (
    SELECT call_id, 1 AS rule, 'dropped' AS status,
           CASE WHEN unpaid THEN 'insufficient_coins'
                WHEN silent_at <= coalesce(max_at, 'infinity') THEN 'heartbeat_timeout'
                ELSE 'max_duration' END AS reason,
           least(silent_at, max_at, CASE WHEN unpaid THEN %(now)s END) AS asked
    FROM standing
    WHERE unpaid OR silent_at IS NOT NULL OR max_at IS NOT NULL
    UNION ALL
    SELECT c.call_id, 2, 'dropped', 'expired', %(now)s
    FROM user_calls c
    WHERE %(end_expired)s AND c.status = 'ongoing' AND c.start_time <= %(now)s
      AND in_shard(c.user_id, %(shard)s, %(shards)s)
      AND EXISTS (SELECT 1 FROM user_status s
                  WHERE s.user_id IN (c.user_id, c.listener_id)
                    AND coalesce(s.busy_until,
                                 c.start_time + s.wait_time * interval '1 minute') < %(now)s)
    UNION ALL
    SELECT c.call_id, 3, 'completed', 'completed', %(now)s
    FROM user_calls c
    WHERE %(hang_up)s AND c.call_id = ANY(%(calls)s::integer[]) AND c.status = 'ongoing'
),
ending AS (
    SELECT DISTINCT ON (r.call_id) r.call_id, r.status, r.reason,
           call_end_time(r.asked, c.start_time, c.coins_spent, c.call_type) AS end_time
    FROM rules r JOIN user_calls c USING (call_id)
    ORDER BY r.call_id, r.rule
),
ended AS (
    UPDATE user_calls c
    SET status = e.status, end_reason = e.reason, end_time = e.end_time,
        duration_seconds = floor(extract(epoch FROM e.end_time - c.start_time))::integer,
        duration_minutes = c.coins_spent / call_rate(c.call_type),
        parties_last_seen = s.seen, updated_at = now()
    FROM ending e
    LEFT JOIN standing s USING (call_id)
    WHERE c.call_id = e.call_id
    RETURNING c.call_id, c.end_reason
)
SELECT coalesce(array_agg(call_id ORDER BY call_id), '{}') AS call_ids,
       coalesce(array_agg(end_reason ORDER BY call_id), '{}') AS reasons
FROM ended;

-- name: open_listener_wallets
-- A listener about to be paid has a wallet to be paid into.
INSERT INTO user_wallets (user_id)
SELECT DISTINCT listener_id FROM user_calls
WHERE status <> 'ongoing' AND settled_at IS NULL AND end_reason IS NOT NULL
  AND in_shard(listener_id, %(shard)s, %(shards)s)
  AND (%(calls)s::integer[] IS NULL OR call_id = ANY(%(calls)s::integer[]))
ON CONFLICT (user_id) DO NOTHING;

-- name: settle_ended_calls
-- Settle every ended call whose billing is closed (ended by these workers, or by the API
-- and then charged up to its end), once: its pay is its paid minutes x the listener's
-- badge rate for the call's type on the call's local start date (basic without a badge
-- row), in rupees, recorded exactly in listener_pay. The API's own hang-up already paid
-- the listener (whole coins into balance_coins, and listener_money_earned > 0): such a
-- call is 'paid_by' the API and is not paid again; listener_pay says what the pay should
-- have been. Any other call is paid by these workers: one 'earn' row, unique per call,
-- credits withdrawable_money, and listener_money_earned records it (rounded to the rupee
-- where the API's schema keeps it as an integer). settled_at marks the call done (also
-- when it earned nothing). A call waits until the badges of its local start day are
-- assigned (badge_days).
-- A call or listener wallet locked by another writer is skipped, never waited for: it is
-- settled by a later tick. (Another shard may hold it: a listener paid here can be a caller
-- there, and a row lock can outlive the WHERE clause that took it. Waiting could deadlock.)
WITH ended AS (
    SELECT c.call_id, w.wallet_id,
           c.end_reason = 'api' AND c.listener_money_earned > 0 AS paid_by_api,
           (c.coins_spent / call_rate(c.call_type))
           * CASE c.call_type
                 WHEN 'audio' THEN coalesce(b.audio_rate_per_minute, basic.audio_rate_per_minute)
                 ELSE coalesce(b.video_rate_per_minute, basic.video_rate_per_minute)
             END AS earned
    FROM user_calls c
    JOIN user_wallets w ON w.user_id = c.listener_id
    CROSS JOIN (SELECT * FROM badge_levels WHERE badge = 'basic') basic
    LEFT JOIN listener_badges b
           ON b.listener_id = c.listener_id
          AND b.date = (c.start_time AT TIME ZONE %(timezone)s)::date
    WHERE c.status <> 'ongoing' AND c.settled_at IS NULL AND c.end_reason IS NOT NULL
      AND in_shard(c.listener_id, %(shard)s, %(shards)s)
      AND (%(calls)s::integer[] IS NULL OR c.call_id = ANY(%(calls)s::integer[]))
      AND EXISTS (SELECT 1 FROM badge_days d
                  WHERE d.date = (c.start_time AT TIME ZONE %(timezone)s)::date)
    ORDER BY c.call_id
    FOR UPDATE OF c, w SKIP LOCKED
),
paid AS (
    INSERT INTO user_transactions (wallet_id, tx_type, money_change, call_id)
    SELECT wallet_id, 'earn', earned, call_id FROM ended
    WHERE earned > 0 AND NOT paid_by_api
    ON CONFLICT (call_id) WHERE tx_type = 'earn' DO NOTHING
    RETURNING wallet_id, call_id, money_change
),
settled AS (
    -- (IN, not a join with paid: the planner expects one row of each CTE and would
    -- compare every ended call with every paid one; IN hashes the paid calls.)
    UPDATE user_calls c
    SET settled_at = %(now)s, listener_pay = e.earned,
        paid_by = CASE WHEN e.paid_by_api THEN 'api' ELSE 'workers' END,
        listener_money_earned = CASE WHEN e.call_id IN (SELECT call_id FROM paid) THEN e.earned
                                     ELSE c.listener_money_earned END,
        updated_at = now()
    FROM ended e
    WHERE c.call_id = e.call_id
    RETURNING c.call_id
),
credited AS (
    UPDATE user_wallets w SET withdrawable_money = w.withdrawable_money + s.money,
                              updated_at = now()
    FROM (SELECT wallet_id, sum(money_change) AS money FROM paid GROUP BY wallet_id) s
    WHERE w.wallet_id = s.wallet_id
    RETURNING w.wallet_id
)
SELECT (SELECT count(*) FROM settled) AS calls_settled,
       (SELECT count(*) FROM paid) AS listeners_paid,
       (SELECT coalesce(sum(money_change), 0)::numeric(14, 2) FROM paid) AS money_earned,
       (SELECT count(*) FROM ended WHERE paid_by_api) AS paid_by_api;

-- name: free_parties
-- A party of these ended calls is no longer busy, unless still on another ongoing call:
-- is_busy false, and no busy_until nor wait_time left (the API's hang-up clears both too).
-- Their rows are locked in user id order first: two shards may free the same listener.
-- (The parties are a UNION, not unnest(ARRAY[caller, listener]): the planner cannot
-- look that up by key and compared every busy user with every party.)
WITH parties AS (
    SELECT s.user_id FROM user_status s
    WHERE s.user_id IN (SELECT user_id FROM user_calls WHERE call_id = ANY(%(ended)s::integer[])
                        UNION
                        SELECT listener_id FROM user_calls
                        WHERE call_id = ANY(%(ended)s::integer[]))
      AND (s.is_busy OR s.busy_until IS NOT NULL OR s.wait_time IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM user_calls c
                      WHERE c.status = 'ongoing' AND c.user_id = s.user_id)
      AND NOT EXISTS (SELECT 1 FROM user_calls c
                      WHERE c.status = 'ongoing' AND c.listener_id = s.user_id)
    ORDER BY s.user_id
    FOR UPDATE OF s
)
UPDATE user_status s SET is_busy = false, busy_until = NULL, wait_time = NULL,
                         updated_at = now()
FROM parties p
WHERE s.user_id = p.user_id;

-- name: ended_calls
-- What the API is told of these ended calls, after the commit.
SELECT call_id, user_id, listener_id, end_reason, end_time, coins_spent
FROM user_calls WHERE call_id = ANY(%(ended)s::integer[]) AND status <> 'ongoing'
ORDER BY call_id;

-- name: ongoing_coins_spent
-- The coins_spent of the shard's ongoing calls, for their Redis hashes, after the commit.
SELECT call_id, coins_spent FROM user_calls
WHERE status = 'ongoing' AND in_shard(user_id, %(shard)s, %(shards)s)
  AND (%(calls)s::integer[] IS NULL OR call_id = ANY(%(calls)s::integer[]));
