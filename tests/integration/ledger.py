"""Saathii test data made the way the API makes it, and the ledger's invariants.

The API buys coins with a 'purchase' row, starts a call by inserting it with
coins_spent = rate and one 'spend' row for minute 1, and keeps user_status.last_seen
fresh while an app is open. check_ledger() asserts what must hold after anything.
"""

import itertools
from datetime import datetime
from decimal import Decimal

RATES = {"audio": 10, "video": 60}
PAY = {  # badge: (audio, video) rupees per paid minute
    "basic": (Decimal("1.00"), Decimal("6.00")),
    "bronze": (Decimal("1.25"), Decimal("7.00")),
    "silver": (Decimal("1.50"), Decimal("8.50")),
    "gold": (Decimal("1.80"), Decimal("10.00")),
}
_serial = itertools.count(1)


def add_user(conn, *, coins: int = 0, role: str = "customer", seen: datetime | None = None,
             busy_until: datetime | None = None) -> int:
    n = next(_serial)
    user = conn.execute("INSERT INTO users (username, dob, phone) VALUES (%s, '1990-01-01', %s)"
                        " RETURNING user_id", [f"u{n}", f"+91{n:09d}"]).fetchone()["user_id"]
    conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)", [user, role])
    conn.execute("INSERT INTO user_wallets (user_id) VALUES (%s)", [user])
    conn.execute("INSERT INTO user_status (user_id, is_online, last_seen, is_busy, busy_until)"
                 " VALUES (%s, %s, %s, %s, %s)",
                 [user, seen is not None, seen, busy_until is not None, busy_until])
    if coins:
        buy(conn, user, coins)
    return user


def buy(conn, user: int, coins: int) -> None:
    conn.execute("UPDATE user_wallets SET balance_coins = balance_coins + %s WHERE user_id = %s",
                 [coins, user])
    conn.execute("INSERT INTO user_transactions (wallet_id, tx_type, coins_change)"
                 " SELECT wallet_id, 'purchase', %s FROM user_wallets WHERE user_id = %s",
                 [coins, user])


def start_call(conn, caller: int, listener: int, at: datetime, call_type: str = "audio",
               *, pay_first_minute: bool = True) -> int:
    """Start a call as the API does: minute 1 charged at once (unless told otherwise)."""
    rate = RATES[call_type] if pay_first_minute else 0
    call = conn.execute(
        "INSERT INTO user_calls (user_id, listener_id, call_type, start_time, coins_spent)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING call_id",
        [caller, listener, call_type, at, rate]).fetchone()["call_id"]
    if pay_first_minute:
        conn.execute("UPDATE user_wallets SET balance_coins = balance_coins - %s"
                     " WHERE user_id = %s", [rate, caller])
        conn.execute("INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id,"
                     " call_minute) SELECT wallet_id, 'spend', %s, %s, 1 FROM user_wallets"
                     " WHERE user_id = %s", [-rate, call, caller])
    conn.execute("UPDATE user_status SET is_busy = true WHERE user_id IN (%s, %s)",
                 [caller, listener])
    badges_assigned(conn, at)
    return call


def badges_assigned(conn, at: datetime, timezone: str = "Asia/Kolkata") -> None:
    """As on a healthy system: the badges of `at`'s local day have been assigned (so calls
    of that day can be settled). Tests of the waiting itself delete the row."""
    conn.execute("INSERT INTO badge_days (date) VALUES ((%s AT TIME ZONE %s)::date)"
                 " ON CONFLICT DO NOTHING", [at, timezone])


def seen(conn, at: datetime, *users: int) -> None:
    conn.execute("UPDATE user_status SET last_seen = %s, is_online = true"
                 " WHERE user_id = ANY(%s)", [at, list(users)])


def end_call_as_api(conn, call: int, at: datetime) -> None:
    """The API ends a call normally; settling it is left to the workers."""
    conn.execute("UPDATE user_calls SET status = 'completed', end_time = %s,"
                 " duration_seconds = extract(epoch FROM %s - start_time)::int,"
                 " duration_minutes = coins_spent / call_rate(call_type) WHERE call_id = %s",
                 [at, at, call])


def give_badge(conn, listener: int, day, badge: str) -> None:
    audio, video = PAY[badge]
    conn.execute("INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
                 " video_rate_per_minute) VALUES (%s, %s, %s, %s, %s)",
                 [listener, day, badge, audio, video])


def balance(conn, user: int) -> int:
    return conn.execute("SELECT balance_coins FROM user_wallets WHERE user_id = %s",
                        [user]).fetchone()["balance_coins"]


def money(conn, user: int) -> Decimal:
    return conn.execute("SELECT withdrawable_money FROM user_wallets WHERE user_id = %s",
                        [user]).fetchone()["withdrawable_money"]


def call(conn, call_id: int) -> dict:
    return conn.execute("SELECT * FROM user_calls WHERE call_id = %s", [call_id]).fetchone()


def spent_minutes(conn, call_id: int) -> list[int]:
    return [row["call_minute"] for row in conn.execute(
        "SELECT call_minute FROM user_transactions WHERE tx_type = 'spend' AND call_id = %s"
        " ORDER BY call_minute", [call_id])]


def check_billed(conn, calls: list[tuple[int, int, int]], due: int) -> None:
    """Each (call, caller, minutes its coins pay for) has paid minutes 1..min(due, those),
    one spend each; it is still ongoing if it could pay every due minute, dropped if not;
    its caller keeps the coins of the minutes not yet due."""
    for call_id, caller, affordable in calls:
        assert spent_minutes(conn, call_id) == list(range(1, min(due, affordable) + 1))
        assert call(conn, call_id)["status"] == ("ongoing" if affordable >= due else "dropped")
        assert balance(conn, caller) == 10 * max(0, affordable - due)


def check_ledger(conn, timezone: str = "Asia/Kolkata", *, settled: bool = True) -> None:
    """The ledger's invariants, from the database alone. With `settled`, also that every
    ended call has been settled (true after a tick, not between the API's end and it)."""
    violations = conn.execute("""
        SELECT 'coins_spent differs from its spend rows' AS what, c.call_id AS id
        FROM user_calls c
        WHERE c.coins_spent <> coalesce((SELECT -sum(coins_change) FROM user_transactions t
                                         WHERE t.tx_type = 'spend' AND t.call_id = c.call_id), 0)
        UNION ALL
        SELECT 'balance differs from purchases - spends', w.wallet_id
        FROM user_wallets w
        WHERE w.balance_coins <> coalesce((SELECT sum(coins_change) FROM user_transactions t
                                           WHERE t.wallet_id = w.wallet_id), 0)
        UNION ALL
        SELECT 'withdrawable money differs from earnings', w.wallet_id
        FROM user_wallets w
        WHERE w.withdrawable_money <> coalesce((SELECT sum(money_change) FROM user_transactions t
                                                WHERE t.wallet_id = w.wallet_id
                                                  AND t.tx_type = 'earn'), 0)
        UNION ALL
        SELECT 'minute charged twice', call_id FROM user_transactions
        WHERE tx_type = 'spend' GROUP BY call_id, call_minute HAVING count(*) > 1
        UNION ALL
        SELECT 'minutes not 1..n', call_id FROM user_transactions WHERE tx_type = 'spend'
        GROUP BY call_id HAVING max(call_minute) <> count(*)
        UNION ALL
        SELECT 'ended call not settled', call_id FROM user_calls
        WHERE %(settled)s AND status <> 'ongoing' AND settled_at IS NULL
        UNION ALL
        SELECT 'call paid wrong', c.call_id
        FROM user_calls c
        CROSS JOIN (SELECT * FROM badge_levels WHERE badge = 'basic') basic
        LEFT JOIN listener_badges b ON b.listener_id = c.listener_id
             AND b.date = (c.start_time AT TIME ZONE %(tz)s)::date
        WHERE c.settled_at IS NOT NULL
          AND c.listener_pay IS DISTINCT FROM (c.coins_spent / call_rate(c.call_type)) *
              CASE c.call_type WHEN 'audio'
                   THEN coalesce(b.audio_rate_per_minute, basic.audio_rate_per_minute)
                   ELSE coalesce(b.video_rate_per_minute, basic.video_rate_per_minute) END
        UNION ALL
        SELECT 'call paid more than once or not as recorded', c.call_id
        FROM user_calls c
        WHERE c.settled_at IS NOT NULL
          AND CASE c.paid_by WHEN 'api' THEN 0 ELSE c.listener_pay END
              <> coalesce((SELECT sum(money_change) FROM user_transactions t
                           WHERE t.tx_type = 'earn' AND t.call_id = c.call_id), 0)
        UNION ALL
        SELECT 'a paid minute began after the call ended', call_id FROM user_calls
        WHERE status <> 'ongoing' AND end_time IS NOT NULL
          AND start_time + (coins_spent / call_rate(call_type) - 1) * interval '1 minute'
              > end_time
        UNION ALL
        SELECT 'negative balance', wallet_id FROM user_wallets
        WHERE balance_coins < 0 OR withdrawable_money < 0
    """, {"tz": timezone, "settled": settled}).fetchall()
    assert violations == [], violations
