"""Per-minute billing and settlement on a real PostgreSQL and Redis, at explicit logical
times. check_ledger() runs after every scenario."""

import json
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import redis
from ledger import (
    add_user,
    balance,
    buy,
    call,
    check_ledger,
    end_call_as_api,
    give_badge,
    money,
    seen,
    spent_minutes,
    start_call,
)

from workers.app import end_call, events
from workers.engine.hooks import Hooks
from workers.engine.runs import RunOptions, Status, run_job
from workers.jobs.coin_deduction import Params, deduct_per_minute_coins
from workers.observability.logs import RunLog
from workers.schedule import JOBS

IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=IST)
HEARTBEAT = timedelta(seconds=120)
SLACK = timedelta(seconds=60)
MINUTE = timedelta(minutes=1)
RULES = Params(heartbeat_timeout_seconds=120, heartbeat_slack_seconds=60, max_call_minutes=240)


def tick(conn, at, *, rules=RULES, **options):
    return deduct_per_minute_coins(conn, at, timezone=IST, rules=rules, **options)


@pytest.fixture
def pair(conn):
    """A caller with 1000 coins and a listener, both heard throughout (last seen far ahead
    is how the tests keep a party 'heard' without ticking a clock)."""
    caller = add_user(conn, coins=1000, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    return caller, listener


def test_a_call_owes_every_started_minute(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0)

    assert tick(conn, T0).minutes_charged == 0  # minute 1 was paid by the API
    assert tick(conn, T0 + timedelta(seconds=59)).minutes_charged == 0
    assert tick(conn, T0 + MINUTE).minutes_charged == 1
    assert tick(conn, T0 + timedelta(minutes=5, seconds=30)).minutes_charged == 4
    assert spent_minutes(conn, c) == [1, 2, 3, 4, 5, 6]
    assert call(conn, c)["coins_spent"] == 60 and balance(conn, caller) == 940
    check_ledger(conn)


def test_a_duplicate_tick_charges_nothing(conn, pair):
    caller, listener = pair
    start_call(conn, caller, listener, T0)
    first = tick(conn, T0 + 3 * MINUTE)
    again = tick(conn, T0 + 3 * MINUTE)
    assert (first.minutes_charged, again.minutes_charged) == (3, 0)
    assert balance(conn, caller) == 960
    check_ledger(conn)


def test_missed_ticks_are_caught_up_and_a_late_tick_charges_nothing_more(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0)
    assert tick(conn, T0 + 10 * MINUTE).minutes_charged == 10
    assert tick(conn, T0 + 4 * MINUTE).minutes_charged == 0  # a stale message
    assert spent_minutes(conn, c) == list(range(1, 12))
    check_ledger(conn)


def test_a_call_inserted_unpaid_owes_minute_one(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0, pay_first_minute=False)
    assert tick(conn, T0).minutes_charged == 1
    assert spent_minutes(conn, c) == [1]
    check_ledger(conn)


def test_a_late_tick_does_not_touch_a_call_that_started_after_it(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0 + 5 * MINUTE, pay_first_minute=False)
    result = tick(conn, T0)
    assert (result.minutes_charged, list(result.ended)) == (0, [])
    assert call(conn, c)["status"] == "ongoing"


def test_a_call_ends_exactly_when_its_coins_run_out(conn):
    caller = add_user(conn, coins=45, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)  # 35 coins left: minutes 2, 3 and 4

    assert tick(conn, T0 + 2 * MINUTE).minutes_charged == 2
    assert call(conn, c)["status"] == "ongoing"
    result = tick(conn, T0 + 4 * MINUTE)  # owes 4 and 5, can pay 4 only
    assert result.minutes_charged == 1
    assert result.end_reasons == {"insufficient_coins": 1}
    ended = call(conn, c)
    assert (ended["status"], ended["end_reason"], ended["end_time"]) == \
        ("dropped", "insufficient_coins", T0 + 4 * MINUTE)
    assert (ended["coins_spent"], ended["duration_minutes"], ended["duration_seconds"]) == \
        (40, 4, 240)
    assert balance(conn, caller) == 5
    assert tick(conn, T0 + 9 * MINUTE).minutes_charged == 0  # an ended call owes nothing
    check_ledger(conn)


def test_a_call_ends_at_once_when_the_balance_cannot_pay_the_next_minute(conn):
    caller = add_user(conn, coins=60, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0, "video")  # all 60 coins went on minute 1
    result = tick(conn, T0 + MINUTE)
    assert result.minutes_charged == 0 and call(conn, c)["status"] == "dropped"
    assert balance(conn, caller) == 0
    check_ledger(conn)


def test_owed_minutes_are_charged_oldest_first_across_a_callers_calls(conn):
    caller = add_user(conn, coins=140, seen=T0 + timedelta(days=1))
    first = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    second = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    older = start_call(conn, caller, first, T0)  # 130 coins left
    newer = start_call(conn, caller, second, T0 + timedelta(seconds=30))  # 120 left

    tick(conn, T0 + timedelta(minutes=20))  # owes 20 + 20 minutes, can pay 12
    # minutes by start: older m2 (T0+1), newer m2 (T0+1:30), older m3 (T0+2), ...
    assert spent_minutes(conn, older) == list(range(1, 8))
    assert spent_minutes(conn, newer) == list(range(1, 8))
    assert balance(conn, caller) == 0
    assert {call(conn, c)["end_reason"] for c in (older, newer)} == {"insufficient_coins"}
    check_ledger(conn)


def test_a_silent_party_ends_the_call_at_its_last_sighting_plus_the_slack(conn):
    caller = add_user(conn, coins=1000, seen=T0 + timedelta(minutes=2, seconds=10))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)

    # heard 1:50 ago: within the timeout, not decided yet; but minute 5 (from 4:00) began
    # after the sighting + the slack (3:10): it is not owed, so not charged
    assert (list(tick(conn, T0 + 4 * MINUTE).ended), spent_minutes(conn, c)) == (
        [], [1, 2, 3, 4])
    result = tick(conn, T0 + 5 * MINUTE)  # heard 2:50 ago: decided silent
    assert result.end_reasons == {"heartbeat_timeout": 1} and result.minutes_charged == 0
    ended = call(conn, c)
    assert (ended["end_time"], ended["parties_last_seen"]) == (
        T0 + timedelta(minutes=3, seconds=10), T0 + timedelta(minutes=2, seconds=10))
    # minutes 1-4 started before the caller's sighting + the slack; none after
    assert spent_minutes(conn, c) == [1, 2, 3, 4] and balance(conn, caller) == 960
    check_ledger(conn)


def test_silence_is_not_billable_even_while_the_timeout_has_not_decided_it(conn):
    """The caller's app closed at 0:50: whatever the ticks until the timeout decides,
    the customer pays minutes 1 and 2 (2 began at 1:00, within the slack), never more."""
    caller = add_user(conn, coins=1000, seen=T0 + timedelta(seconds=50))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)
    for minute in range(1, 6):
        tick(conn, T0 + minute * MINUTE)
    assert spent_minutes(conn, c) == [1, 2]
    assert call(conn, c)["end_time"] == T0 + timedelta(seconds=110)
    check_ledger(conn)


def test_a_minute_is_deferred_until_its_parties_are_seen_never_charged_and_refunded(conn):
    caller = add_user(conn, coins=1000, seen=T0)
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)

    assert tick(conn, T0 + 90 * timedelta(seconds=1)).minutes_charged == 0  # minute 2: 1:00
    seen(conn, T0 + timedelta(seconds=85), caller)  # a heartbeat (written late)
    assert tick(conn, T0 + 2 * MINUTE).minutes_charged == 2  # minutes 2 and 3 now owed
    assert spent_minutes(conn, c) == [1, 2, 3] and call(conn, c)["status"] == "ongoing"
    check_ledger(conn)


def test_a_party_never_seen_is_seen_at_the_call_start(conn):
    caller = add_user(conn, coins=1000)  # no last_seen at all
    listener = add_user(conn, role="listener")
    c = start_call(conn, caller, listener, T0)
    assert list(tick(conn, T0 + MINUTE).ended) == []
    assert list(tick(conn, T0 + 3 * MINUTE).ended) == [c]
    assert spent_minutes(conn, c) == [1]  # minute 2 began as the slack ran out
    assert call(conn, c)["end_time"] == T0 + SLACK


def test_a_silent_call_is_ended_even_by_a_tick_long_after(conn, pair):
    caller, listener = pair
    seen(conn, T0 + timedelta(seconds=20), caller)
    c = start_call(conn, caller, listener, T0)
    result = tick(conn, T0 + timedelta(hours=3))  # the workers were down for hours
    assert list(result.ended) == [c]
    assert spent_minutes(conn, c) == [1, 2]
    assert call(conn, c)["end_time"] == T0 + timedelta(seconds=80)
    check_ledger(conn)


def test_a_call_ends_at_its_maximum_length_and_owes_nothing_after(conn, pair):
    caller, listener = pair
    buy(conn, caller, 5000)
    c = start_call(conn, caller, listener, T0)
    rules = Params(max_call_minutes=30)
    assert tick(conn, T0 + 29 * MINUTE, rules=rules).minutes_charged == 29
    ended = tick(conn, T0 + 45 * MINUTE, rules=rules)  # a late tick, past the maximum
    assert (ended.minutes_charged, ended.end_reasons) == (0, {"max_duration": 1})
    done = call(conn, c)
    assert (done["status"], done["end_time"], done["coins_spent"]) == (
        "dropped", T0 + 30 * MINUTE, 300)
    assert tick(conn, T0 + 50 * MINUTE, rules=rules).minutes_charged == 0
    check_ledger(conn)


def test_a_stuck_ongoing_call_never_drains_the_wallet_beyond_its_maximum(conn, pair):
    """The API's end route fails on every call: a call its parties left 'ongoing' with
    their apps open is billed for the maximum length at most, in one late tick too."""
    caller, listener = pair
    buy(conn, caller, 2000)  # 3000 coins: 300 minutes, more than the maximum of 240
    c = start_call(conn, caller, listener, T0)
    assert tick(conn, T0 + timedelta(days=3)).end_reasons == {"max_duration": 1}
    assert spent_minutes(conn, c) == list(range(1, 241)) and balance(conn, caller) == 600
    assert call(conn, c)["end_time"] == T0 + 240 * MINUTE
    check_ledger(conn)


def test_an_ended_call_is_settled_once_at_the_badge_rate_of_its_local_start_date(conn, pair):
    caller, listener = pair
    start = datetime(2026, 11, 21, 23, 50, tzinfo=IST)  # local date: the 21st
    give_badge(conn, listener, start.date(), "silver")
    give_badge(conn, listener, start.date() + timedelta(days=1), "gold")
    buy(conn, caller, 1000)  # 21 video minutes cost 1260
    c = start_call(conn, caller, listener, start, "video")
    tick(conn, start + 20 * MINUTE)  # 21 minutes paid, into the 22nd
    end_call_as_api(conn, c, start + timedelta(minutes=20, seconds=30))

    first = tick(conn, start + 21 * MINUTE)
    again = tick(conn, start + 22 * MINUTE)
    assert (first.calls_settled, again.calls_settled) == (1, 0)
    assert first.money_earned == Decimal("178.50")  # 21 x 8.50, silver on the 21st
    assert call(conn, c)["listener_money_earned"] == Decimal("178.50")
    assert money(conn, listener) == Decimal("178.50")
    check_ledger(conn)


def test_a_listener_without_a_badge_is_paid_basic(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0)
    tick(conn, T0 + 2 * MINUTE)
    end_call_as_api(conn, c, T0 + timedelta(minutes=2, seconds=5))
    assert tick(conn, T0 + 3 * MINUTE).money_earned == Decimal("3.00")  # 3 x 1.00
    check_ledger(conn)


def test_the_parties_of_an_ended_call_are_free_unless_on_another_call(conn):
    caller = add_user(conn, coins=10, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    other_caller = add_user(conn, coins=1000, seen=T0 + timedelta(days=1))
    start_call(conn, caller, listener, T0)
    start_call(conn, other_caller, listener, T0)
    tick(conn, T0 + MINUTE)  # the first caller runs out
    busy = {row["user_id"]: row["is_busy"] for row in conn.execute(
        "SELECT user_id, is_busy FROM user_status")}
    assert busy[caller] is False and busy[listener] is True and busy[other_caller] is True


def test_a_topped_up_wallet_keeps_its_call_going(conn):
    caller = add_user(conn, coins=20, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)
    tick(conn, T0 + MINUTE)
    buy(conn, caller, 100)
    tick(conn, T0 + 3 * MINUTE)
    assert call(conn, c)["status"] == "ongoing" and balance(conn, caller) == 80
    check_ledger(conn)


def run_options(db, redis_url=None):
    client = redis.Redis.from_url(redis_url or db.redis_url, socket_timeout=2,
                                  socket_connect_timeout=2)
    return RunOptions(timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(seconds=60),
                      settings={"heartbeat_timeout_seconds": 120}, redis=client,
                      hooks=Hooks(RunLog()))


def test_the_job_keeps_the_redis_contract(db, conn, pair):
    caller, listener = pair
    client = redis.Redis.from_url(db.redis_url)
    going = start_call(conn, caller, listener, T0)
    expired = start_call(conn, caller, add_user(conn, role="listener",
                                                seen=T0 + timedelta(days=1)), T0)
    broke = start_call(conn, add_user(conn, coins=10, seen=T0 + timedelta(days=1)), listener,
                       T0)
    for c in (going, broke):  # as the API makes it; `expired`'s hash has timed out
        client.hset(events.call_key(c), mapping={"user_id": caller, "call_type": "audio",
                                                 "coins_spent": 10})
        client.expire(events.call_key(c), 7200)
    subscriber = client.pubsub()
    subscriber.subscribe(events.CALL_CHANNEL)
    subscriber.get_message(timeout=5)  # the subscription confirmation

    outcome = run_job(conn, JOBS["coin_deduction"], T0 + 2 * MINUTE,
                      run_options(db))

    assert outcome.status is Status.SUCCEEDED
    assert outcome.result["minutes_charged"] == 4
    assert outcome.result["calls_ended"] == {"insufficient_coins": 1}
    assert client.hgetall(events.call_key(going)) == {
        b"user_id": str(caller).encode(), b"call_type": b"audio", b"coins_spent": b"30"}
    assert 7000 < client.ttl(events.call_key(going)) <= 7200  # the API's TTL, kept
    assert not client.exists(events.call_key(expired))  # never made again by a tick
    assert not client.exists(events.call_key(broke))
    message = subscriber.get_message(timeout=5)
    assert json.loads(message["data"]) | {"ended_at": None} == {
        "event": "call_ended", "call_id": broke, "reason": "insufficient_coins",
        "ended_at": None, "coins_spent": 10, "caller_id": call(conn, broke)["user_id"],
        "listener_id": listener}
    subscriber.close()


def test_a_redis_failure_never_undoes_the_money(db, conn, pair):
    caller, listener = pair
    start_call(conn, caller, listener, T0)
    outcome = run_job(conn, JOBS["coin_deduction"], T0 + 2 * MINUTE,
                      run_options(db, "redis://127.0.0.1:1/0"))
    assert outcome.status is Status.SUCCEEDED
    assert balance(conn, caller) == 970
    check_ledger(conn)


def test_a_hang_up_charges_the_owed_minutes_then_completes_the_call(conn, pair):
    caller, listener = pair
    c = start_call(conn, caller, listener, T0)
    tick(conn, T0 + MINUTE)
    ended = end_call(conn, c, T0 + timedelta(minutes=3, seconds=20), timezone=IST)
    assert ended.minutes_charged == 2  # minutes 3 and 4 started before the hang-up
    done = call(conn, c)
    assert (done["status"], done["end_reason"], done["duration_seconds"]) == \
        ("completed", "completed", 200)
    assert done["settled_at"] is not None and done["listener_money_earned"] == Decimal("4.00")
    again = end_call(conn, c, T0 + 9 * MINUTE, timezone=IST)
    assert (again.minutes_charged, list(again.ended)) == (0, [])
    check_ledger(conn)


def test_a_hang_up_the_caller_cannot_pay_for_ends_dropped(conn):
    caller = add_user(conn, coins=20, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)
    end_call(conn, c, T0 + 5 * MINUTE, timezone=IST)
    assert (call(conn, c)["status"], call(conn, c)["end_reason"]) == \
        ("dropped", "insufficient_coins")
    assert spent_minutes(conn, c) == [1, 2]
    check_ledger(conn)


def test_a_call_waits_for_its_days_badges_before_it_is_settled(conn, pair):
    caller, listener = pair
    start = datetime(2026, 11, 23, 0, 0, 10, tzinfo=IST)  # just after local midnight
    c = start_call(conn, caller, listener, start)
    conn.execute("DELETE FROM badge_days")  # the 00:01 badge run has not happened yet
    end_call_as_api(conn, c, start + timedelta(seconds=40))

    assert tick(conn, start + timedelta(seconds=45)).calls_settled == 0
    assert call(conn, c)["settled_at"] is None

    give_badge(conn, listener, start.date(), "gold")  # the 00:01 run, as badges.py does it
    conn.execute("INSERT INTO badge_days (date) VALUES (%s)", [start.date()])
    assert tick(conn, start + timedelta(minutes=2)).money_earned == Decimal("1.80")
    check_ledger(conn)


def test_a_silent_call_its_caller_cannot_pay_for_ends_for_insufficient_coins(conn):
    caller = add_user(conn, coins=10, seen=T0 + timedelta(seconds=30))  # owed until 1:30
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    c = start_call(conn, caller, listener, T0)  # no coins left after minute 1
    result = tick(conn, T0 + 5 * MINUTE)  # owes minute 2 (1:00), begun within the slack
    assert result.end_reasons == {"insufficient_coins": 1}
    assert call(conn, c)["end_time"] == T0 + timedelta(seconds=90)
    assert spent_minutes(conn, c) == [1]
    check_ledger(conn)
