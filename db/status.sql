-- What `status` warns an operator of (workers.cli), beyond the jobs. Each query is named
-- by its `-- name:` line.

-- name: paid_by_the_api
-- Calls the API's own hang-up paid: its listener credited whole rupees as coins into
-- balance_coins (listener_money_earned), where the pay due was listener_pay, in rupees,
-- into withdrawable_money. The workers pay such a call nothing more: the difference is
-- the operator's to settle.
SELECT count(*) AS calls, coalesce(sum(listener_pay), 0)::numeric(14, 2) AS due,
       coalesce(sum(listener_money_earned), 0)::bigint AS credited_coins
FROM user_calls
WHERE paid_by = 'api';

-- name: held_since_adoption
-- Calls db init held from billing at adoption that are still 'ongoing': their parties
-- stay busy in the API until an operator ends them (`adopted-calls --end`).
SELECT count(*) AS calls, coalesce(sum(a.coins_at_stake), 0)::bigint AS coins_at_stake
FROM adopted_calls a
JOIN user_calls c USING (call_id)
WHERE c.status = 'ongoing';
