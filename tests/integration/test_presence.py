"""Presence hygiene on a real PostgreSQL and Redis: who goes offline, whose busy state ends,
and what the API hears about it."""

import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.app.events import PRESENCE_CHANNEL
from workers.engine.hooks import Hooks
from workers.engine.runs import RunOptions, Status, run_job
from workers.jobs.presence_cleanup import (
    bring_back_online,
    cleanup_expired_busy_status,
    get_online_users_count,
    mark_inactive_users_offline,
)
from workers.observability.logs import RunLog
from workers.schedule import JOBS

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
JOB = JOBS["presence_cleanup"]
#: The last message a test publishes itself: everything the job sent arrived before it.
SENTINEL = {"event": "sentinel"}

_numbers = itertools.count(1)


def add_user(conn, *, online: bool = False, last_seen: datetime | None = None,
             busy: bool = False, busy_until: datetime | None = None) -> int:
    n = next(_numbers)
    user_id = conn.execute(
        "INSERT INTO users (username, dob, phone) VALUES (%s, '2000-01-01', %s)"
        " RETURNING user_id", [f"p{n}", f"+91{n:010d}"]).fetchone()["user_id"]
    conn.execute("INSERT INTO user_status (user_id, is_online, last_seen, is_busy, busy_until)"
                 " VALUES (%s, %s, %s, %s, %s)", [user_id, online, last_seen, busy, busy_until])
    return user_id


def add_call(conn, caller: int, listener: int, status: str = "ongoing") -> None:
    conn.execute("INSERT INTO user_calls (user_id, listener_id, call_type, start_time, status)"
                 " VALUES (%s, %s, 'audio', %s, %s)",
                 [caller, listener, NOW - timedelta(minutes=30), status])


def status_of(conn, user_id: int) -> dict:
    return conn.execute("SELECT * FROM user_status WHERE user_id = %s", [user_id]).fetchone()


def options(client: redis.Redis | None, **params) -> RunOptions:
    return RunOptions(timezone=ZoneInfo("Asia/Kolkata"), lock_timeout_ms=2000,
                      abandon_grace=timedelta(seconds=60),
                      settings={"presence_inactive_minutes": 5, **params}, redis=client,
                      hooks=Hooks(RunLog()))


def test_offline_after_the_timeout_but_not_at_it(conn):
    late = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=5, microseconds=1))
    at_edge = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=5))
    recent = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=1))
    already_offline = add_user(conn, online=False, last_seen=NOW - timedelta(days=1))

    assert mark_inactive_users_offline(conn, NOW) == [late]

    assert [status_of(conn, u)["is_online"] for u in (late, at_edge, recent, already_offline)] \
        == [False, True, True, False]


def test_the_timeout_is_a_parameter(conn):
    seven_ago = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=7))
    assert mark_inactive_users_offline(conn, NOW, inactive_minutes=10) == []
    assert mark_inactive_users_offline(conn, NOW, inactive_minutes=6) == [seven_ago]


def test_the_timeout_is_judged_at_the_logical_time_not_the_clock(conn):
    # Whatever the wall clock says, only the slot decides: seen at 09:30, the user is
    # online for the 09:30 slot and offline for the 10:30 one.
    user = add_user(conn, online=True, last_seen=NOW - timedelta(hours=1))
    assert mark_inactive_users_offline(conn, NOW - timedelta(hours=1)) == []
    assert mark_inactive_users_offline(conn, NOW) == [user]


def test_an_online_user_never_seen_goes_offline(conn):
    never_seen = add_user(conn, online=True, last_seen=None)
    assert mark_inactive_users_offline(conn, NOW) == [never_seen]
    assert status_of(conn, never_seen)["is_online"] is False


def test_going_offline_touches_updated_at(conn):
    user = add_user(conn, online=True, last_seen=NOW - timedelta(hours=1))
    conn.execute("UPDATE user_status SET updated_at = '2000-01-01' WHERE user_id = %s", [user])
    mark_inactive_users_offline(conn, NOW)
    assert status_of(conn, user)["updated_at"].year > 2000


def test_a_naive_logical_time_is_refused(conn):
    with pytest.raises(ValueError, match="timezone"):
        mark_inactive_users_offline(conn, NOW.replace(tzinfo=None))


def test_busy_is_cleared_once_busy_until_has_passed(conn):
    expired = add_user(conn, busy=True, busy_until=NOW - timedelta(seconds=1))
    at_edge = add_user(conn, busy=True, busy_until=NOW)

    assert cleanup_expired_busy_status(conn, NOW) == [expired]

    row = status_of(conn, expired)
    assert (row["is_busy"], row["busy_until"]) == (False, None)
    assert status_of(conn, at_edge)["is_busy"] is True


def test_busy_until_in_the_future_stays_busy(conn):
    user = add_user(conn, busy=True, busy_until=NOW + timedelta(minutes=3))
    assert cleanup_expired_busy_status(conn, NOW) == []
    row = status_of(conn, user)
    assert (row["is_busy"], row["busy_until"]) == (True, NOW + timedelta(minutes=3))


def test_busy_without_busy_until_stays_busy(conn):
    user = add_user(conn, busy=True, busy_until=None)
    assert cleanup_expired_busy_status(conn, NOW) == []
    assert status_of(conn, user)["is_busy"] is True


@pytest.mark.parametrize("side", ["caller", "listener"])
def test_busy_but_on_a_live_call_stays_busy(conn, side):
    user = add_user(conn, busy=True, busy_until=NOW - timedelta(minutes=10))
    other = add_user(conn)
    add_call(conn, *((user, other) if side == "caller" else (other, user)))

    assert cleanup_expired_busy_status(conn, NOW) == []
    assert status_of(conn, user)["is_busy"] is True


@pytest.mark.parametrize("status", ["completed", "dropped"])
def test_a_call_that_ended_does_not_keep_its_parties_busy(conn, status):
    caller = add_user(conn, busy=True, busy_until=NOW - timedelta(minutes=1))
    listener = add_user(conn, busy=True, busy_until=NOW - timedelta(minutes=1))
    add_call(conn, caller, listener, status=status)
    assert cleanup_expired_busy_status(conn, NOW) == sorted([caller, listener])


def test_the_online_count(conn):
    assert get_online_users_count(conn) == 0
    for online in (True, True, False):
        add_user(conn, online=online, last_seen=NOW)
    assert get_online_users_count(conn) == 2


def published_until_sentinel(client: redis.Redis, pubsub, timeout: float = 5.0) -> list[dict]:
    """The events on the channel before a sentinel this sends now: Redis delivers a
    channel's messages in order, so these are all the job published, without waiting for
    a silence."""
    client.publish(PRESENCE_CHANNEL, json.dumps(SENTINEL))
    deadline = time.monotonic() + timeout
    events = []
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True,
                                     timeout=deadline - time.monotonic())
        if message is None:
            continue
        event = json.loads(message["data"])
        if event == SENTINEL:
            return events
        events.append(event)
    raise AssertionError(f"the sentinel never arrived; got {events}")


@pytest.fixture
def subscribed(db):
    """A Redis client and a pubsub already subscribed (confirmed) to PRESENCE_CHANNEL."""
    with redis.Redis.from_url(db.redis_url) as client, client.pubsub() as pubsub:
        pubsub.subscribe(PRESENCE_CHANNEL)
        confirmation = pubsub.get_message(timeout=5)
        assert confirmation and confirmation["type"] == "subscribe"
        yield client, pubsub


def test_the_job_reports_its_counts_and_publishes_each_change(conn, subscribed):
    client, pubsub = subscribed
    silent = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=6))
    add_user(conn, online=True, last_seen=NOW - timedelta(minutes=2))
    freed = add_user(conn, online=True, last_seen=NOW, busy=True,
                     busy_until=NOW - timedelta(minutes=1))
    on_call = add_user(conn, busy=True, busy_until=NOW - timedelta(minutes=1))
    add_call(conn, on_call, silent)

    outcome = run_job(conn, JOB, NOW, options(client))

    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"marked_offline": 1, "back_online": 0, "busy_cleared": 1,
                              "online_users": 2}
    at = NOW.isoformat()
    assert published_until_sentinel(client, pubsub) == [
        {"event": "offline", "user_id": silent, "at": at},
        {"event": "not_busy", "user_id": freed, "at": at},
    ]


def test_a_job_that_changes_nothing_publishes_nothing(conn, subscribed):
    client, pubsub = subscribed
    add_user(conn, online=True, last_seen=NOW)

    outcome = run_job(conn, JOB, NOW, options(client))

    assert outcome.result == {"marked_offline": 0, "back_online": 0, "busy_cleared": 0,
                              "online_users": 1}
    assert published_until_sentinel(client, pubsub) == []


def test_the_job_reads_its_timeout_from_job_settings_overrides(conn):
    user = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=7))
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES (%s, %s)",
                 [JOB.name, json.dumps({"presence_inactive_minutes": 10})])

    outcome = run_job(conn, JOB, NOW, options(None))

    assert outcome.result["marked_offline"] == 0
    assert status_of(conn, user)["is_online"] is True


def test_a_redis_failure_after_commit_keeps_the_database_changes(conn, caplog):
    silent = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=6))
    freed = add_user(conn, busy=True, busy_until=NOW - timedelta(minutes=1))

    # Nothing listens on port 1; no retries, so the refusal is immediate.
    with redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0)) as dead:
        outcome = run_job(conn, JOB, NOW, options(dead))

    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"marked_offline": 1, "back_online": 0, "busy_cleared": 1,
                              "online_users": 0}
    assert "after-commit step failed" in caplog.text
    assert status_of(conn, silent)["is_online"] is False
    assert status_of(conn, freed)["is_busy"] is False
    row = conn.execute("SELECT status FROM job_runs WHERE job = %s", [JOB.name]).fetchone()
    assert row["status"] == "succeeded"


def heartbeat(conn, user: int, at: datetime) -> None:
    """The API's heartbeat: last_seen only (POST /both/status/heartbeat)."""
    conn.execute("UPDATE user_status SET last_seen = %s, updated_at = now() WHERE user_id = %s",
                 [at, user])


def test_a_user_set_offline_here_and_seen_again_is_online_again(conn):
    listener = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=20))
    assert mark_inactive_users_offline(conn, NOW) == [listener]
    heartbeat(conn, listener, NOW + timedelta(minutes=2))  # the app is back

    assert bring_back_online(conn, NOW + timedelta(minutes=5)) == [listener]
    back = status_of(conn, listener)
    assert (back["is_online"], back["offline_marked_at"]) == (True, None)


def test_a_user_the_api_logged_out_stays_offline(conn):
    """Logout sets is_online false and last_seen now: not this job's doing."""
    user = add_user(conn, online=True, last_seen=NOW)
    conn.execute("UPDATE user_status SET is_online = false, last_seen = %s WHERE user_id = %s",
                 [NOW + timedelta(minutes=1), user])
    assert bring_back_online(conn, NOW + timedelta(minutes=2)) == []
    assert status_of(conn, user)["is_online"] is False


def test_a_mark_is_forgotten_once_the_user_logs_in_so_a_later_logout_holds(conn):
    user = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=20))
    mark_inactive_users_offline(conn, NOW)
    conn.execute("UPDATE user_status SET is_online = true, last_seen = %s WHERE user_id = %s",
                 [NOW + timedelta(minutes=1), user])  # the API's login
    assert bring_back_online(conn, NOW + timedelta(minutes=2)) == []  # online already
    conn.execute("UPDATE user_status SET is_online = false, last_seen = %s WHERE user_id = %s",
                 [NOW + timedelta(minutes=3), user])  # then its logout
    assert bring_back_online(conn, NOW + timedelta(minutes=4)) == []
    assert status_of(conn, user)["is_online"] is False


def test_a_user_seen_too_long_ago_is_not_brought_back(conn):
    user = add_user(conn, online=True, last_seen=NOW - timedelta(minutes=20))
    mark_inactive_users_offline(conn, NOW)
    heartbeat(conn, user, NOW + timedelta(minutes=1))
    assert bring_back_online(conn, NOW + timedelta(minutes=30)) == []


def test_the_apis_wait_time_is_the_busy_expiry_where_there_is_no_busy_until(conn):
    """The API sets is_busy and wait_time (the minutes the caller's coins covered) at the
    start of a call, never busy_until; once the call is over and that time has gone by,
    the busy state is cleared, wait_time with it."""
    expired, current = add_user(conn, busy=True), add_user(conn, busy=True)
    other = add_user(conn)
    conn.execute("UPDATE user_status SET wait_time = 10 WHERE user_id IN (%s, %s)",
                 [expired, current])
    add_call(conn, expired, other, status="completed")  # started 30 minutes ago: 10 + 20
    conn.execute("INSERT INTO user_calls (user_id, listener_id, call_type, start_time, status)"
                 " VALUES (%s, %s, 'audio', %s, 'completed')",
                 [current, other, NOW - timedelta(minutes=5)])

    assert cleanup_expired_busy_status(conn, NOW) == [expired]
    freed = status_of(conn, expired)
    assert (freed["is_busy"], freed["wait_time"]) == (False, None)
    assert status_of(conn, current)["is_busy"] is True
