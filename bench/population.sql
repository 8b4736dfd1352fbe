-- The bench's world: %(calls)s ongoing calls at logical time %(now)s, each 90 seconds
-- old, so minute 1 is paid (the API charged it with the call's start) and minute 2 is
-- owed. Callers are users 1..N, listeners N+1..2N; a call's caller is drawn from a
-- shuffle, so wallets are touched in no particular order, as in life. The callers of
-- a %(broke)s fraction of calls have no coins left. Everyone is fresh (last_seen = now).
-- Each call's minute 1 names it, and a tick has seen it (first_minute_linked): the bench
-- measures the steady minute, not a call's first tick.

-- name: users
INSERT INTO users (user_id, username, dob, phone)
SELECT id, 'u' || id, date '1990-01-01', '+91' || id
FROM generate_series(1, 2 * %(calls)s::integer) id;

-- name: roles
INSERT INTO user_roles (user_id, role)
SELECT id, CASE WHEN id <= %(calls)s::integer THEN 'customer' ELSE 'listener' END
FROM generate_series(1, 2 * %(calls)s::integer) id;

-- name: status
INSERT INTO user_status (user_id, is_online, last_seen, is_busy, busy_until)
SELECT id, true, %(now)s, true, %(now)s::timestamptz + interval '1 hour'
FROM generate_series(1, 2 * %(calls)s::integer) id;

-- name: calls
INSERT INTO user_calls (call_id, user_id, listener_id, call_type, start_time, coins_spent,
                        first_minute_linked)
SELECT call_id, caller, %(calls)s::integer + caller, call_type,
       %(now)s::timestamptz - interval '90 seconds', call_rate(call_type), true
FROM (SELECT row_number() OVER (ORDER BY random()) AS call_id, caller,
             CASE WHEN caller %% 10 = 0 THEN 'video' ELSE 'audio' END AS call_type
      FROM generate_series(1, %(calls)s::integer) caller) c
ORDER BY call_id;

-- name: wallets
INSERT INTO user_wallets (wallet_id, user_id, balance_coins)
SELECT id, id, CASE WHEN id <= %(calls)s::integer
                    AND id <= %(broke)s::float8 * %(calls)s::integer THEN 0
                    WHEN id <= %(calls)s::integer THEN 1000000 ELSE 0 END
FROM generate_series(1, 2 * %(calls)s::integer) id;

-- name: minute_one
INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id, call_minute,
                               created_at)
SELECT c.user_id, 'spend', -c.coins_spent, c.call_id, 1, c.start_time
FROM user_calls c ORDER BY c.call_id;

-- name: badge_days
INSERT INTO badge_days (date)
VALUES ((%(now)s::timestamptz AT TIME ZONE %(timezone)s)::date),
       ((%(now)s::timestamptz AT TIME ZONE %(timezone)s)::date - 1)
ON CONFLICT DO NOTHING;

-- name: sequences
SELECT setval(pg_get_serial_sequence('users', 'user_id'), 2 * %(calls)s::integer),
       setval(pg_get_serial_sequence('user_calls', 'call_id'), %(calls)s::integer),
       setval(pg_get_serial_sequence('user_wallets', 'wallet_id'), 2 * %(calls)s::integer);
