-- The invariants of a chaos run, checked from the database alone once the storm has
-- settled (chaos.checks runs them in one read-only REPEATABLE READ transaction). Each
-- named query returns one row per violation: none is the goal. Parameters: %(final)s, the
-- logical time of the final tick; %(heartbeat)s, the heartbeat timeout; %(slack)s, the
-- heartbeat slack; %(max_minutes)s, the maximum call length; %(timezone)s, APP_TIMEZONE.
-- Queries named summary_* are not invariants: they describe the run.
--
-- Minute k of a call starts at start_time + (k - 1) minutes; the minutes it has paid are
-- its spend rows. A minute is owed when it has started, before its parties' last sighting
-- + the slack, within the maximum length. The arithmetic is written out here rather than
-- taken from ongoing_calls_at(), so that the rule is checked, not repeated.

-- 1. Every (call, minute) charged at most once; every owed minute charged -----------------

-- name: minute_charged_twice
-- A (call, minute) is charged at most once. A unique index forbids a second spend row;
-- the rows are checked all the same.
SELECT call_id, call_minute, count(*) AS spends
FROM user_transactions
WHERE tx_type = 'spend'
GROUP BY call_id, call_minute
HAVING count(*) > 1;

-- name: spend_not_a_call_minute
-- Every spend pays one minute of one call, from the caller's wallet, at the call's rate.
SELECT t.transaction_id, t.call_id, t.call_minute, t.coins_change
FROM user_transactions t
LEFT JOIN user_calls c ON c.call_id = t.call_id
LEFT JOIN user_wallets w ON w.wallet_id = t.wallet_id
WHERE t.tx_type = 'spend'
  AND (c.call_id IS NULL OR t.call_minute IS NULL OR w.user_id <> c.user_id
       OR t.coins_change <> -call_rate(c.call_type));

-- name: minutes_not_contiguous
-- A call's paid minutes are 1..n: charged oldest first, none skipped.
SELECT call_id, min(call_minute) AS first_minute, max(call_minute) AS last_minute,
       count(*) AS paid
FROM user_transactions
WHERE tx_type = 'spend' AND call_id IS NOT NULL
GROUP BY call_id
HAVING min(call_minute) <> 1 OR max(call_minute) <> count(*);

-- name: ended_call_minutes
-- An ended call paid exactly the minutes it owed at its end, by the sighting its billing
-- closed on (parties_last_seen): started by end_time when it was hung up ('completed') or
-- expired; started before end_time when a party went silent (it ended at the sighting +
-- the slack) or it reached its maximum length (minute 1 always). The exceptions: a call
-- ended for insufficient coins paid fewer than it owed (it ended at a tick that found an
-- owed minute it could not pay, never as many); a call the API's hang-up ended ('api')
-- paid what it owed as far as its caller's coins covered, never more. Status and end
-- reason agree, and the end is not before the start.
WITH ended AS (
    SELECT c.call_id, c.status, c.end_reason, c.start_time, c.end_time,
           (SELECT count(*) FROM user_transactions t
            WHERE t.tx_type = 'spend' AND t.call_id = c.call_id) AS paid,
           least(CASE WHEN c.end_reason IN ('completed', 'expired', 'insufficient_coins')
                      THEN floor(extract(epoch FROM c.end_time - c.start_time) / 60) + 1
                      ELSE greatest(1, ceil(extract(epoch FROM c.end_time - c.start_time)
                                            / 60))
                 END,
                 ceil(extract(epoch FROM greatest(c.start_time, c.parties_last_seen)
                                         + %(slack)s - c.start_time) / 60),
                 %(max_minutes)s)::integer AS due
    FROM user_calls c
    WHERE c.status <> 'ongoing'
)
SELECT call_id, status, end_reason, start_time, end_time, paid, due
FROM ended
WHERE end_time IS NULL OR end_time < start_time OR due IS NULL
   OR (status, coalesce(end_reason, '')) NOT IN (('completed', 'completed'),
                                                 ('dropped', 'insufficient_coins'),
                                                 ('dropped', 'heartbeat_timeout'),
                                                 ('dropped', 'max_duration'),
                                                 ('dropped', 'expired'),
                                                 ('completed', 'api'), ('dropped', 'api'))
   OR CASE WHEN end_reason = 'insufficient_coins' THEN paid >= due
           WHEN end_reason = 'api' THEN paid > due OR paid < 1
           ELSE paid <> due END;

-- name: ongoing_call_minutes
-- A call still ongoing after the final tick has paid every minute owed by then (and none
-- beyond); none of its parties has been silent past the heartbeat timeout, it is not past
-- its maximum length, and no busy_until of theirs has passed (the final tick and
-- call_cleanup end such calls).
WITH ongoing AS (
    SELECT c.call_id, c.start_time, s.seen,
           (SELECT count(*) FROM user_transactions t
            WHERE t.tx_type = 'spend' AND t.call_id = c.call_id) AS paid,
           least(floor(extract(epoch FROM %(final)s - c.start_time) / 60) + 1,
                 ceil(extract(epoch FROM s.seen + %(slack)s - c.start_time) / 60),
                 %(max_minutes)s)::integer AS due,
           least(caller.busy_until, listener.busy_until) AS busy_until
    FROM user_calls c
    LEFT JOIN user_status caller ON caller.user_id = c.user_id
    LEFT JOIN user_status listener ON listener.user_id = c.listener_id
    CROSS JOIN LATERAL (
        SELECT greatest(c.start_time, least(coalesce(caller.last_seen, '-infinity'),
                                            coalesce(listener.last_seen, '-infinity'))) AS seen
    ) s
    WHERE c.status = 'ongoing'
)
SELECT call_id, start_time, paid, due, seen, busy_until
FROM ongoing
WHERE start_time > %(final)s OR paid <> due
   OR seen + %(heartbeat)s < %(final)s OR busy_until < %(final)s
   OR start_time + %(max_minutes)s * interval '1 minute' <= %(final)s;

-- 2. Per wallet: balance = purchases - spends, never negative ----------------------------

-- name: balance_differs_from_ledger
-- A wallet's coins are the sum of its ledger's coin changes (purchases - spends, and the
-- coins the API's own hang-up credits a listener), its withdrawable money the sum of its
-- earnings' money changes (a purchase's money_change is what the customer paid).
SELECT w.wallet_id, w.user_id, w.balance_coins, coalesce(l.coins, 0) AS ledger_coins,
       w.withdrawable_money, coalesce(l.money, 0) AS ledger_money
FROM user_wallets w
LEFT JOIN (SELECT wallet_id, sum(coins_change) AS coins,
                  sum(money_change) FILTER (WHERE tx_type = 'earn') AS money
           FROM user_transactions GROUP BY wallet_id) l ON l.wallet_id = w.wallet_id
WHERE w.balance_coins <> coalesce(l.coins, 0)
   OR w.withdrawable_money <> coalesce(l.money, 0);

-- name: balance_negative_in_history
-- Never negative at any time. Every writer of coins (the API's purchases and first
-- minutes, the ticks) locks the wallet's row before it adds its ledger row, so per wallet
-- the ledger's id order is its commit order, and the running sum is the balance after
-- each commit.
SELECT wallet_id, transaction_id, balance_after
FROM (SELECT wallet_id, transaction_id,
             sum(coins_change) OVER (PARTITION BY wallet_id ORDER BY transaction_id)
                 AS balance_after
      FROM user_transactions
      WHERE coins_change <> 0) ledger
WHERE balance_after < 0;

-- name: money_constraint_missing
-- "Never negative" is the database's to refuse, not a check's to find: both CHECK
-- constraints exist on user_wallets and are validated (they hold for every row).
SELECT expected.name
FROM (VALUES ('balance_coins_never_negative'), ('withdrawable_money_never_negative'))
     AS expected (name)
LEFT JOIN pg_constraint k ON k.conname = expected.name
                         AND k.conrelid = 'user_wallets'::regclass
                         AND k.contype = 'c' AND k.convalidated
WHERE k.oid IS NULL;

-- name: negative_balance
-- And none is negative now.
SELECT wallet_id, balance_coins, withdrawable_money
FROM user_wallets
WHERE balance_coins < 0 OR withdrawable_money < 0;

-- 3. Per call: coins = its spends; ended calls settled once, at the right rate -----------

-- name: coins_spent_differs_from_spends
-- A call's coins_spent is the sum of its spend rows.
SELECT c.call_id, c.coins_spent, coalesce(s.coins, 0) AS spend_rows_coins
FROM user_calls c
LEFT JOIN (SELECT call_id, -sum(coins_change) AS coins
           FROM user_transactions WHERE tx_type = 'spend' GROUP BY call_id) s
       ON s.call_id = c.call_id
WHERE c.coins_spent <> coalesce(s.coins, 0);

-- name: ended_call_not_settled
-- Every ended call has been settled (the final tick settles whatever is left, once the
-- badges of the call's local start date are assigned).
SELECT call_id, status, end_reason, end_time,
       (start_time AT TIME ZONE %(timezone)s)::date AS local_date
FROM user_calls
WHERE status <> 'ongoing' AND settled_at IS NULL;

-- name: ongoing_call_settled
-- A call is settled once it has ended, never while it is ongoing.
SELECT c.call_id, c.settled_at
FROM user_calls c
WHERE c.status = 'ongoing'
  AND (c.settled_at IS NOT NULL
       OR EXISTS (SELECT 1 FROM user_transactions t
                  WHERE t.tx_type = 'earn' AND t.call_id = c.call_id));

-- name: call_paid_more_than_once
-- A call these workers paid has one earn row, into its listener's wallet, for exactly its
-- pay (listener_pay); a call the API's own hang-up paid ('paid_by' api) has none of ours;
-- and every earn row naming a call pays a settled call. (The API's earn rows name no
-- call: they are the coins its hang-up credits.)
SELECT c.call_id, c.paid_by, count(t.transaction_id) AS earn_rows, c.listener_pay,
       coalesce(sum(t.money_change), 0) AS earned
FROM user_calls c
LEFT JOIN user_transactions t ON t.tx_type = 'earn' AND t.call_id = c.call_id
LEFT JOIN user_wallets w ON w.wallet_id = t.wallet_id
WHERE c.settled_at IS NOT NULL
GROUP BY c.call_id
HAVING count(t.transaction_id) > 1
    OR coalesce(c.paid_by, '') NOT IN ('workers', 'api')
    OR CASE c.paid_by WHEN 'api' THEN 0 ELSE c.listener_pay END
       <> coalesce(sum(t.money_change), 0)
    OR coalesce(bool_or(w.user_id <> c.listener_id), false)
UNION ALL
SELECT t.call_id, NULL, 1, NULL, t.money_change
FROM user_transactions t
LEFT JOIN user_calls c ON c.call_id = t.call_id
WHERE t.tx_type = 'earn' AND t.call_id IS NOT NULL AND c.settled_at IS NULL;

-- name: call_paid_wrong_rate
-- A settled call's pay is its paid minutes times its listener's badge rate for the call's
-- type on the call's local start date (basic without a badge row for that date), exactly,
-- whoever paid it.
SELECT c.call_id, c.listener_id, (c.start_time AT TIME ZONE %(timezone)s)::date AS local_date,
       coalesce(b.badge, 'basic') AS badge, c.coins_spent / call_rate(c.call_type) AS minutes,
       c.listener_pay
FROM user_calls c
CROSS JOIN (SELECT * FROM badge_levels WHERE badge = 'basic') basic
LEFT JOIN listener_badges b ON b.listener_id = c.listener_id
                           AND b.date = (c.start_time AT TIME ZONE %(timezone)s)::date
WHERE c.settled_at IS NOT NULL
  AND c.listener_pay IS DISTINCT FROM (c.coins_spent / call_rate(c.call_type))
      * CASE c.call_type
            WHEN 'audio' THEN coalesce(b.audio_rate_per_minute, basic.audio_rate_per_minute)
            ELSE coalesce(b.video_rate_per_minute, basic.video_rate_per_minute)
        END;

-- 4. Per job and slot: at most one success; no run left running without an owner --------

-- name: slot_succeeded_twice
-- A (job, slot) succeeds at most once (job_runs is unique on it; checked all the same).
SELECT job, scheduled_for, count(*) FILTER (WHERE status = 'succeeded') AS succeeded
FROM job_runs
GROUP BY job, scheduled_for
HAVING count(*) FILTER (WHERE status = 'succeeded') > 1;

-- name: running_without_owner
-- No run is left 'running' whose database session is gone (once the workers have
-- stopped, none is alive): the run contract marks such a run abandoned at the job's next
-- claim, and the settling ran every recurring job again.
SELECT r.run_id, r.job, r.scheduled_for, r.attempt, r.host, r.pid, r.backend_pid
FROM job_runs r
WHERE r.status = 'running'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                  WHERE a.pid = r.backend_pid AND a.backend_start = r.backend_start);

-- name: final_tick_missing
-- The final tick of every billing job (coin_deduction, or each shard's) succeeded: the
-- minute checks above are judged at its time.
SELECT b.job, %(final)s::timestamptz AS scheduled_for
FROM unnest(%(billing_jobs)s::text[]) AS b (job)
WHERE NOT EXISTS (SELECT 1 FROM job_runs r
                  WHERE r.job = b.job AND r.scheduled_for = %(final)s
                    AND r.status = 'succeeded');

-- The run, described --------------------------------------------------------------------

-- name: summary_calls
SELECT coalesce(end_reason, 'ongoing') AS state, count(*) AS calls
FROM user_calls
GROUP BY 1
ORDER BY 1;

-- name: summary_charges
SELECT count(*) AS minutes_charged,
       count(*) FILTER (WHERE call_minute > 1) AS minutes_charged_by_workers,
       coalesce(-sum(coins_change), 0)::bigint AS coins_charged
FROM user_transactions
WHERE tx_type = 'spend';

-- name: summary_earnings
SELECT count(*) AS calls_paid, coalesce(sum(money_change), 0)::text AS money_earned
FROM user_transactions
WHERE tx_type = 'earn';

-- name: summary_paid_by_api
-- Calls the API's own hang-up paid (whole rupees as coins), against the pay due.
SELECT count(*) AS calls, coalesce(sum(listener_pay), 0)::text AS due,
       coalesce(sum(listener_money_earned), 0)::bigint AS credited_coins
FROM user_calls
WHERE paid_by = 'api';

-- name: summary_runs
SELECT job, jsonb_object_agg(status, n) AS statuses
FROM (SELECT job, status, count(*) AS n FROM job_runs GROUP BY job, status) r
GROUP BY job
ORDER BY job;

-- name: summary_run_problems
-- Why runs failed, were skipped or abandoned, most frequent first.
SELECT job, status, left(coalesce(error, skip_reason, ''), 160) AS why, count(*) AS runs
FROM job_runs
WHERE status IN ('failed', 'skipped', 'abandoned')
GROUP BY 1, 2, 3
ORDER BY runs DESC
LIMIT 12;

-- name: summary_ticks
-- Of the storm's logical minutes, how many got a successful billing tick of their own (of
-- every shard).
SELECT count(*) AS minutes_ticked
FROM (SELECT scheduled_for FROM job_runs
      WHERE job = ANY(%(billing_jobs)s::text[]) AND status = 'succeeded'
        AND scheduled_for >= %(start)s AND scheduled_for < %(final)s
      GROUP BY scheduled_for
      HAVING count(*) = cardinality(%(billing_jobs)s::text[])) ticked;
