"""Coin balances, as the original service API offered them (get_user_coin_balance,
update_user_coin_balance), over a connection the caller owns."""

import psycopg

from workers.engine.db import queries

TX_TYPES = ("purchase", "spend", "earn", "withdraw", "bonus", "referral_bonus")
OPERATIONS = {"add": 1, "subtract": -1}


def get_user_coin_balance(conn: psycopg.Connection, user_id: int) -> int:
    """The user's balance in coins; 0 for a user without a wallet."""
    row = conn.execute(queries("wallets.sql")["balance"], {"user_id": user_id}).fetchone()
    return row["balance_coins"] if row else 0


def update_user_coin_balance(conn: psycopg.Connection, user_id: int, amount: int,
                             operation: str = "subtract", tx_type: str = "spend") -> int:
    """Add or subtract `amount` coins, recorded as one `tx_type` transaction; returns the
    new balance. ValueError for a bad operation, amount or type, a missing wallet, or
    insufficient coins (then nothing changes)."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be 'add' or 'subtract', not {operation!r}")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive whole number of coins, not {amount!r}")
    if tx_type not in TX_TYPES:
        raise ValueError(f"tx_type must be one of {', '.join(TX_TYPES)}, not {tx_type!r}")
    with conn.transaction():
        row = conn.execute(queries("wallets.sql")["move_coins"], {
            "user_id": user_id, "delta": OPERATIONS[operation] * amount, "tx_type": tx_type,
        }).fetchone()
    if row is not None:
        return row["balance_coins"]
    wallet = conn.execute(queries("wallets.sql")["balance"], {"user_id": user_id}).fetchone()
    if wallet is None:
        raise ValueError(f"user {user_id} has no wallet")
    raise ValueError(f"insufficient coins: user {user_id} has {wallet['balance_coins']}, "
                     f"needs {amount}")
