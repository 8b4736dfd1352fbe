"""Which jobs are on time, overdue, overrunning or paused, at explicit logical times."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from workers.engine import controls, runtime
from workers.engine.runs import run_job
from workers.observability.overdue import State, job_states
from workers.schedule import JOBS

TIMEZONE = ZoneInfo("Asia/Kolkata")
NOW = datetime(2026, 11, 22, 10, 7, 30, tzinfo=UTC)  # 15:37:30 local
RUNNING = """INSERT INTO job_runs (job, scheduled_for, status, started_at, deadline)
             VALUES (%(job)s, %(slot)s, 'running', %(started)s, %(started)s + interval '1 h')"""


def states(conn, now=NOW):
    return {name: state.state for name, state in
            job_states(conn, JOBS.values(), now, TIMEZONE).items()}


def run(conn, job: str, slot: datetime):
    return run_job(conn, JOBS[job], slot, runtime.current().run_options())


def test_a_slot_past_its_grace_without_a_success_is_overdue_and_one_that_ran_is_not(conn):
    assert set(states(conn).values()) == {State.OVERDUE}  # a fresh database: nothing ran
    assert states(conn)["coin_deduction"] is State.OVERDUE  # 10:06 never ran

    run(conn, "coin_deduction", datetime(2026, 11, 22, 10, 6, tzinfo=UTC))
    assert states(conn)["coin_deduction"] is State.ON_TIME
    # Its grace is a minute: at 10:08:30 the 10:07 slot is due, and it never ran.
    assert states(conn, NOW + timedelta(minutes=1))["coin_deduction"] is State.OVERDUE
    # presence_cleanup's grace is five minutes: 10:00 is its due slot at 10:07:30.
    run(conn, "presence_cleanup", datetime(2026, 11, 22, 10, 0, tzinfo=UTC))
    assert states(conn)["presence_cleanup"] is State.ON_TIME
    [state] = job_states(conn, [JOBS["call_cleanup"]], NOW, TIMEZONE).values()
    assert state.detail == ("the slot 2026-11-22T15:30:00+05:30 is past its 300 s grace"
                            " with no run")


def test_a_run_past_its_time_limit_is_overrunning_and_a_paused_job_only_paused(conn):
    conn.execute(RUNNING, {"job": "catch_up", "slot": NOW.replace(minute=6, second=0),
                           "started": NOW - timedelta(seconds=31)})  # limit: 30 s
    controls.set_paused(conn, JOBS["call_cleanup"], True)

    found = job_states(conn, JOBS.values(), NOW, TIMEZONE)

    assert found["catch_up"].state is State.OVERRUNNING
    assert "past its 30 s limit" in found["catch_up"].detail
    assert found["call_cleanup"].state is State.PAUSED
    # Still within its limit a second earlier: a running slot is on time.
    assert states(conn, NOW - timedelta(seconds=2))["catch_up"] is State.ON_TIME
