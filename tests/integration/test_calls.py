"""call_cleanup: the safety net that ends, charges and settles overdue calls and clears
stale Redis hashes."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import redis
from ledger import add_user, call, check_ledger, seen, spent_minutes, start_call

from workers.app import events
from workers.engine.runs import RunOptions, Status, run_job
from workers.jobs.coin_deduction import deduct_per_minute_coins
from workers.schedule import JOBS

IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
MINUTE = timedelta(minutes=1)
LATER = T0 + timedelta(days=1)


def cleanup(db, conn, at):
    client = redis.Redis.from_url(db.redis_url)
    options = RunOptions(timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(minutes=1),
                         settings={"heartbeat_timeout_seconds": 120}, redis=client)
    outcome = run_job(conn, JOBS["call_cleanup"], at, options)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


def test_a_call_whose_busy_until_passed_is_charged_ended_and_settled(db, conn):
    caller = add_user(conn, coins=1000, seen=LATER)
    listener = add_user(conn, role="listener", seen=LATER)
    c = start_call(conn, caller, listener, T0)
    conn.execute("UPDATE user_status SET busy_until = %s WHERE user_id = %s",
                 [T0 + 5 * MINUTE, listener])

    result = cleanup(db, conn, T0 + 10 * MINUTE)

    assert result["calls_ended"] == {"expired": 1}
    ended = call(conn, c)
    assert (ended["status"], ended["end_reason"], ended["end_time"]) == \
        ("dropped", "expired", T0 + 10 * MINUTE)
    assert spent_minutes(conn, c) == list(range(1, 12))  # charged up to its end
    assert ended["settled_at"] is not None
    status = {r["user_id"]: (r["is_busy"], r["busy_until"]) for r in
              conn.execute("SELECT user_id, is_busy, busy_until FROM user_status")}
    assert status[caller] == status[listener] == (False, None)
    check_ledger(conn)


def test_a_call_with_time_left_is_left_alone(db, conn):
    caller = add_user(conn, coins=1000, seen=LATER)
    listener = add_user(conn, role="listener", seen=LATER, busy_until=T0 + timedelta(hours=1))
    c = start_call(conn, caller, listener, T0)
    assert cleanup(db, conn, T0 + 10 * MINUTE)["calls_ended"] == {}
    assert call(conn, c)["status"] == "ongoing"


def test_a_call_whose_parties_went_silent_is_ended(db, conn):
    caller = add_user(conn, coins=1000, seen=LATER)
    listener = add_user(conn, role="listener")
    seen(conn, T0 + MINUTE, listener)
    c = start_call(conn, caller, listener, T0)
    assert cleanup(db, conn, T0 + 10 * MINUTE)["calls_ended"] == {"heartbeat_timeout": 1}
    assert call(conn, c)["end_time"] == T0 + 2 * MINUTE  # seen at 1:00, + the 60 s slack
    check_ledger(conn)


def test_redis_hashes_of_calls_no_longer_ongoing_are_removed(db, conn):
    client = redis.Redis.from_url(db.redis_url)
    caller = add_user(conn, coins=1000, seen=LATER)
    listener = add_user(conn, role="listener", seen=LATER)
    going = start_call(conn, caller, listener, T0)
    over = start_call(conn, caller, listener, T0)
    conn.execute("UPDATE user_calls SET status = 'completed', end_time = %s WHERE call_id = %s",
                 [T0 + MINUTE, over])
    for call_id in (going, over, 999_999):  # 999999: no such call (yet): left alone
        client.hset(events.call_key(call_id), "coins_spent", 10)

    result = cleanup(db, conn, T0 + 2 * MINUTE)

    assert result["stale_call_hashes"] == 1
    assert client.exists(events.call_key(going)) and client.exists(events.call_key(999_999))
    assert not client.exists(events.call_key(over))
    assert client.hget(events.call_key(going), "coins_spent") == b"30"


def test_a_late_cleanup_never_ends_a_call_before_its_last_paid_minute(db, conn):
    """Found by `make chaos` (seed 11): call_cleanup's 10:10 slot ran after the 10:12 tick
    and ended the call at 10:10, though minutes 11 and 12 had been paid."""
    caller = add_user(conn, coins=1000, seen=LATER)
    listener = add_user(conn, role="listener", seen=LATER)
    c = start_call(conn, caller, listener, T0)
    conn.execute("UPDATE user_status SET busy_until = %s WHERE user_id = %s",
                 [T0 + 5 * MINUTE, listener])
    deduct_per_minute_coins(conn, T0 + 12 * MINUTE, timezone=IST)  # the later tick

    assert cleanup(db, conn, T0 + 10 * MINUTE)["calls_ended"] == {"expired": 1}

    ended = call(conn, c)
    assert spent_minutes(conn, c) == list(range(1, 14))
    assert ended["end_time"] == T0 + 12 * MINUTE  # minute 13 began then
    check_ledger(conn)
