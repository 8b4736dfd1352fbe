"""The daily badges on a real PostgreSQL: thresholds, which calls count, the local day and
its DST variants, idempotency and backfill."""

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from workers.engine.runs import RunOptions, Status, run_job
from workers.jobs.badge_assignment import assign_daily_badges
from workers.schedule import JOBS

KOLKATA = ZoneInfo("Asia/Kolkata")
PARIS = ZoneInfo("Europe/Paris")
D = date(2026, 11, 22)
JOB = JOBS["badge_assignment"]
OPTIONS = RunOptions(timezone=KOLKATA, lock_timeout_ms=2000, abandon_grace=timedelta(seconds=60))

_numbers = itertools.count(1)


#: When the tests' accounts were made: before every day they award.
REGISTERED = datetime(2026, 1, 1, tzinfo=KOLKATA)


def add_user(conn, *roles: str, active: bool = True,
             registered: datetime = REGISTERED) -> int:
    n = next(_numbers)
    user_id = conn.execute(
        "INSERT INTO users (username, dob, phone, created_at) VALUES (%s, '2000-01-01', %s, %s)"
        " RETURNING user_id", [f"b{n}", f"+92{n:010d}", registered]).fetchone()["user_id"]
    for role in roles:
        conn.execute("INSERT INTO user_roles (user_id, role, active) VALUES (%s, %s, %s)",
                     [user_id, role, active])
    return user_id


@pytest.fixture
def caller(conn) -> int:
    return add_user(conn, "customer")


def add_call(conn, caller: int, listener: int, start: datetime, seconds: int | None,
             status: str = "completed") -> int:
    end = start + timedelta(seconds=seconds or 0)
    return conn.execute(
        "INSERT INTO user_calls (user_id, listener_id, call_type, start_time, end_time,"
        " duration_seconds, status) VALUES (%s, %s, 'audio', %s, %s, %s, %s)"
        " RETURNING call_id", [caller, listener, start, end, seconds, status]
    ).fetchone()["call_id"]


def local(day: date, hour: int = 0, minute: int = 0, tz: ZoneInfo = KOLKATA) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)


def badges_on(conn, day: date) -> dict[int, str]:
    rows = conn.execute("SELECT listener_id, badge FROM listener_badges WHERE date = %s",
                        [day]).fetchall()
    return {row["listener_id"]: row["badge"] for row in rows}


def badge_of(conn, listener: int, day: date = D) -> str | None:
    return badges_on(conn, day).get(listener)


@pytest.mark.parametrize(("seconds", "badge"), [
    (None, "basic"),                 # no call at all
    (179 * 60 + 59, "basic"),
    (180 * 60, "bronze"),
    (359 * 60, "bronze"),
    (360 * 60, "silver"),
    (539 * 60, "silver"),
    (540 * 60, "gold"),
])
def test_each_threshold_edge(conn, caller, seconds, badge):
    listener = add_user(conn, "listener")
    if seconds is not None:
        add_call(conn, caller, listener, local(D - timedelta(days=1), 9), seconds)

    assign_daily_badges(conn, D, KOLKATA)

    assert badge_of(conn, listener) == badge


def test_a_listener_below_every_level_gets_basic_even_if_basic_needs_minutes(conn, caller):
    conn.execute("UPDATE badge_levels SET min_minutes = 30 WHERE badge = 'basic'")
    listener = add_user(conn, "listener")
    add_call(conn, caller, listener, local(D - timedelta(days=1), 9), 10 * 60)

    assign_daily_badges(conn, D, KOLKATA)

    assert badge_of(conn, listener) == "basic"


def test_minutes_add_up_over_the_day_and_a_null_duration_counts_zero(conn, caller):
    listener = add_user(conn, "listener")
    yesterday = D - timedelta(days=1)
    add_call(conn, caller, listener, local(yesterday, 9), 90 * 60)
    add_call(conn, caller, listener, local(yesterday, 15), 90 * 60, status="dropped")
    add_call(conn, caller, listener, local(yesterday, 18), None, status="dropped")

    assign_daily_badges(conn, D, KOLKATA)

    assert badge_of(conn, listener) == "bronze"


def test_the_badge_carries_its_levels_rates(conn, caller):
    listener = add_user(conn, "listener")
    add_call(conn, caller, listener, local(D - timedelta(days=1), 9), 360 * 60)

    assign_daily_badges(conn, D, KOLKATA)

    row = conn.execute("SELECT * FROM listener_badges WHERE listener_id = %s",
                       [listener]).fetchone()
    assert (row["badge"], row["audio_rate_per_minute"], row["video_rate_per_minute"]) \
        == ("silver", Decimal("1.50"), Decimal("8.50"))


def test_only_completed_and_dropped_calls_count(conn, caller):
    on_call, dropped = add_user(conn, "listener"), add_user(conn, "listener")
    yesterday = D - timedelta(days=1)
    add_call(conn, caller, on_call, local(yesterday, 9), 600 * 60, status="ongoing")
    add_call(conn, caller, dropped, local(yesterday, 9), 180 * 60, status="dropped")

    assign_daily_badges(conn, D, KOLKATA)

    assert badge_of(conn, on_call) == "basic"
    assert badge_of(conn, dropped) == "bronze"


def test_inactive_listeners_and_customers_get_no_badge(conn, caller):
    inactive = add_user(conn, "listener", active=False)
    customer = add_user(conn, "customer")
    both = add_user(conn, "customer", "listener")
    add_call(conn, caller, inactive, local(D - timedelta(days=1), 9), 600 * 60)

    stats = assign_daily_badges(conn, D, KOLKATA)

    assert badges_on(conn, D) == {both: "basic"}
    assert inactive not in badges_on(conn, D) and customer not in badges_on(conn, D)
    assert stats["total_listeners"] == 1


def test_the_day_is_the_local_day_in_kolkata(conn, caller):
    three_hours = 180 * 60
    late_yesterday = add_user(conn, "listener")   # 23:50 on D-1, ends after midnight
    first_instant = add_user(conn, "listener")    # 00:00 on D-1
    just_after = add_user(conn, "listener")       # 00:05 on D: counts for D+1
    at_midnight = add_user(conn, "listener")      # 00:00 on D: counts for D+1
    two_days_ago = add_user(conn, "listener")     # 23:50 on D-2
    add_call(conn, caller, late_yesterday, local(D - timedelta(days=1), 23, 50), three_hours)
    add_call(conn, caller, first_instant, local(D - timedelta(days=1)), three_hours)
    add_call(conn, caller, just_after, local(D, 0, 5), three_hours)
    add_call(conn, caller, at_midnight, local(D), three_hours)
    add_call(conn, caller, two_days_ago, local(D - timedelta(days=2), 23, 50), three_hours)

    assign_daily_badges(conn, D, KOLKATA)
    assign_daily_badges(conn, D + timedelta(days=1), KOLKATA)

    assert badges_on(conn, D) == {late_yesterday: "bronze", first_instant: "bronze",
                                  just_after: "basic", at_midnight: "basic",
                                  two_days_ago: "basic"}
    assert badges_on(conn, D + timedelta(days=1))[just_after] == "bronze"
    assert badges_on(conn, D + timedelta(days=1))[at_midnight] == "bronze"


def test_the_day_follows_a_dst_change_in_paris(conn, caller):
    # 2026-03-29 in Paris has 23 hours: [2026-03-28 23:00Z, 2026-03-29 22:00Z).
    day = date(2026, 3, 30)
    three_hours = 180 * 60
    last_hour = add_user(conn, "listener")      # 23:30 CEST on the 29th
    after_it = add_user(conn, "listener")       # 00:30 CEST on the 30th: 24 h after 00:30 CET
    first_minute = add_user(conn, "listener")   # 00:00 CET on the 29th
    before_it = add_user(conn, "listener")      # 23:59 CET on the 28th
    add_call(conn, caller, last_hour, datetime(2026, 3, 29, 21, 30, tzinfo=UTC), three_hours)
    add_call(conn, caller, after_it, datetime(2026, 3, 29, 22, 30, tzinfo=UTC), three_hours)
    add_call(conn, caller, first_minute, datetime(2026, 3, 28, 23, 0, tzinfo=UTC), three_hours)
    add_call(conn, caller, before_it, datetime(2026, 3, 28, 22, 59, tzinfo=UTC), three_hours)

    assign_daily_badges(conn, day, PARIS)

    assert badges_on(conn, day) == {last_hour: "bronze", after_it: "basic",
                                    first_minute: "bronze", before_it: "basic"}


def test_a_rerun_writes_nothing_and_keeps_existing_badges(conn, caller):
    listener = add_user(conn, "listener")
    add_call(conn, caller, listener, local(D - timedelta(days=1), 9), 180 * 60)
    first = assign_daily_badges(conn, D, KOLKATA)
    before = conn.execute("SELECT *, xmin::text AS version FROM listener_badges").fetchall()

    # The day's calls change afterwards: enough for gold now, and a new listener appears.
    add_call(conn, caller, listener, local(D - timedelta(days=1), 15), 400 * 60)
    newcomer = add_user(conn, "listener")
    second = assign_daily_badges(conn, D, KOLKATA)

    after = conn.execute("SELECT *, xmin::text AS version FROM listener_badges"
                         " WHERE listener_id = %s", [listener]).fetchall()
    assert after == before
    assert badges_on(conn, D) == {listener: "bronze", newcomer: "basic"}
    assert first["bronze_assigned"] == second["bronze_assigned"] == 1
    assert second["total_listeners"] == 2


def test_a_badge_set_before_the_run_is_kept(conn, caller):
    listener = add_user(conn, "listener")
    conn.execute("INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
                 " video_rate_per_minute) VALUES (%s, %s, 'gold', 1.80, 10.00)", [listener, D])

    stats = assign_daily_badges(conn, D, KOLKATA)

    assert badge_of(conn, listener) == "gold"
    assert stats["gold_assigned"] == 1 and stats["basic_assigned"] == 0


def test_the_stats_count_the_badges_held_for_the_day(conn, caller):
    yesterday = D - timedelta(days=1)
    for seconds in (None, 60, 180 * 60, 360 * 60, 600 * 60):
        listener = add_user(conn, "listener")
        if seconds:
            add_call(conn, caller, listener, local(yesterday, 9), seconds)
    add_user(conn, "listener", active=False)

    assert assign_daily_badges(conn, D, KOLKATA) == {
        "total_listeners": 5, "basic_assigned": 2, "bronze_assigned": 1,
        "silver_assigned": 1, "gold_assigned": 1, "errors": 0,
    }


def test_no_listeners_gives_zero_stats(conn):
    assert assign_daily_badges(conn, D, KOLKATA) == {
        "total_listeners": 0, "basic_assigned": 0, "bronze_assigned": 0,
        "silver_assigned": 0, "gold_assigned": 0, "errors": 0,
    }


def test_a_past_day_is_backfilled_through_its_slot(conn, caller):
    # The 00:01 slot of 2026-11-20 in Kolkata is still the 19th in UTC: the day is local.
    past = date(2026, 11, 20)
    listener = add_user(conn, "listener")
    add_call(conn, caller, listener, local(past - timedelta(days=1), 20), 540 * 60)

    outcome = run_job(conn, JOB, local(past, 0, 1), OPTIONS, trigger="cli")

    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"date": "2026-11-20", "total_listeners": 1, "basic_assigned": 0,
                              "bronze_assigned": 0, "silver_assigned": 0, "gold_assigned": 1,
                              "errors": 0}
    assert badges_on(conn, past) == {listener: "gold"}
    assert badges_on(conn, past + timedelta(days=1)) == {}


def test_assigning_a_day_opens_it_for_settlement_even_without_listeners(conn):
    assign_daily_badges(conn, D, KOLKATA)
    assign_daily_badges(conn, D, KOLKATA)
    days = [row["date"] for row in conn.execute("SELECT date FROM badge_days")]
    assert days == [D]


def test_a_listener_the_api_deactivated_gets_no_badge(conn, caller):
    kept, deactivated = add_user(conn, "listener"), add_user(conn, "listener")
    conn.execute("INSERT INTO user_status (user_id, is_active) VALUES (%s, true), (%s, false)",
                 [kept, deactivated])
    assign_daily_badges(conn, D, KOLKATA)
    assert badges_on(conn, D) == {kept: "basic"}


def test_no_badge_for_a_day_before_the_account_existed(conn, caller):
    """A fresh install catches up a week of badge days: a listener who registered on D
    gets D's badge (and D's calls their rate), none for the days before."""
    old = add_user(conn, "listener")
    new = add_user(conn, "listener", registered=local(D, 10))
    for day in (D - timedelta(days=2), D - timedelta(days=1), D):
        assign_daily_badges(conn, day, KOLKATA)
    assert badges_on(conn, D - timedelta(days=1)) == {old: "basic"}
    assert badges_on(conn, D) == {old: "basic", new: "basic"}
