"""The per-call loop: the ORIGINAL billing algorithm, re-implemented faithfully as the
baseline the set-based tick is measured against (never the workers' SQL).

The original `deduct_per_minute_coins` read every ongoing call, then for each call, one at
a time over one connection: read its caller's balance; if it covered the rate, in one
transaction debit the wallet, record a 'spend' and add the rate to the call's coins_spent,
then set the call's coins_spent in its Redis hash ("updates Redis cache"); otherwise end
the call. That is seven round trips per charged call (SELECT, BEGIN, three writes, COMMIT,
HSET). The 'spend' names its call and minute (coins_spent / rate + 1), as our ledger's
unique key requires; the original had no such key, and inserting into it costs the same.

The loop runs on a sample of the calls and is extrapolated linearly to all of them: the
time to read every ongoing call (measured on all of them) plus the loop's time per call
times the number of calls. It charges the sample's next minute, so the harness runs it
after everything else on a database.
"""

import time
from datetime import datetime

import psycopg
from psycopg.rows import namedtuple_row
from redis import Redis

RATES = {"audio": 10, "video": 60}  # coins a minute, as the original hard-coded them
ONGOING = "SELECT * FROM user_calls WHERE status = 'ongoing'"
BALANCE = "SELECT balance_coins FROM user_wallets WHERE user_id = %s"
DEBIT = ("UPDATE user_wallets SET balance_coins = balance_coins - %s, updated_at = now() "
         "WHERE user_id = %s RETURNING wallet_id")
SPEND = ("INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id, "
         "call_minute) VALUES (%s, 'spend', %s, %s, %s)")
CALL_SPENT = ("UPDATE user_calls SET coins_spent = coins_spent + %s, updated_at = now() "
              "WHERE call_id = %s")
END_CALL = ("UPDATE user_calls SET status = 'dropped', end_reason = 'insufficient_coins', "
            "end_time = %s, duration_seconds = floor(extract(epoch FROM %s - start_time)), "
            "duration_minutes = coins_spent / %s, updated_at = now() WHERE call_id = %s")


def per_call_loop(database_url: str, redis: Redis, now: datetime, *, sample: int) -> dict:
    """The original algorithm over the first `sample` ongoing calls, timed; the estimate
    for all of them."""
    with psycopg.connect(database_url, autocommit=True, row_factory=namedtuple_row) as conn:
        started = time.perf_counter()
        calls = conn.execute(ONGOING).fetchall()
        read_seconds = time.perf_counter() - started
        chosen = calls[:sample]
        charged = ended = 0
        started = time.perf_counter()
        for call in chosen:
            if charge_call(conn, redis, call, now):
                charged += 1
            else:
                ended += 1
        loop_seconds = time.perf_counter() - started
    per_call = loop_seconds / len(chosen) if chosen else 0.0
    return {"calls": len(calls), "sample": len(chosen), "charged": charged, "ended": ended,
            "read_seconds": read_seconds, "loop_seconds": loop_seconds,
            "seconds_per_call": per_call,
            "extrapolated_seconds": read_seconds + per_call * len(calls)}


def charge_call(conn: psycopg.Connection, redis: Redis, call, now: datetime) -> bool:
    """One iteration of the original loop; whether the call was charged (else ended)."""
    rate = RATES[call.call_type]
    balance = conn.execute(BALANCE, [call.user_id]).fetchone().balance_coins
    if balance < rate:
        conn.execute(END_CALL, [now, now, rate, call.call_id])
        redis.delete(f"call:{call.call_id}")
        return False
    with conn.transaction():
        wallet = conn.execute(DEBIT, [rate, call.user_id]).fetchone().wallet_id
        conn.execute(SPEND, [wallet, -rate, call.call_id, call.coins_spent // rate + 1])
        conn.execute(CALL_SPENT, [rate, call.call_id])
    redis.hset(f"call:{call.call_id}", "coins_spent", call.coins_spent + rate)
    return True
