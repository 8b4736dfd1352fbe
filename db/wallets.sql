-- Wallet operations of the programmatic API (workers.app.wallets).

-- name: balance
SELECT balance_coins FROM user_wallets WHERE user_id = %(user_id)s;

-- name: move_coins
-- Move a wallet's coins by %(delta)s and record it as one transaction of %(tx_type)s, in
-- one statement: the balance check and the debit cannot be separated, and a debit that
-- would leave the balance negative changes nothing (and returns no row).
WITH moved AS (
    UPDATE user_wallets
    SET balance_coins = balance_coins + %(delta)s, updated_at = now()
    WHERE user_id = %(user_id)s AND balance_coins + %(delta)s >= 0
    RETURNING wallet_id, balance_coins
),
recorded AS (
    INSERT INTO user_transactions (wallet_id, tx_type, coins_change)
    SELECT wallet_id, %(tx_type)s, %(delta)s FROM moved
)
SELECT balance_coins FROM moved;
