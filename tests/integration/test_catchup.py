"""The missed-run policy on a real PostgreSQL, with explicit logical times."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from workers.engine.catch_up import missed_slots
from workers.engine.jobs import MissedRuns
from workers.engine.runs import RunOptions, Status, run_job
from workers.schedule import JOBS

IST = ZoneInfo("Asia/Kolkata")
OPTIONS = RunOptions(timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(seconds=60))
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
BADGES = datetime(2026, 11, 22, 0, 1, tzinfo=IST)  # today's badge_assignment slot
LOGS = datetime(2026, 11, 22, 1, 0, tzinfo=IST)  # today's log_rotation slot


def missed(conn, now=NOW):
    """The latest missed slot of each job."""
    return {name: slot for name, slot in missed_slots(conn, JOBS.values(), now, IST)}


def missed_of(conn, job, now=NOW):
    """Every missed slot of `job`, oldest first."""
    return [slot for name, slot in missed_slots(conn, JOBS.values(), now, IST) if name == job]


def record(conn, job, slot, status, attempt=1, **extra):
    columns = {"job": job, "scheduled_for": slot, "status": status, "attempt": attempt, **extra}
    conn.execute(f"INSERT INTO job_runs ({', '.join(columns)})"
                 f" VALUES ({', '.join(['%s'] * len(columns))})", list(columns.values()))


def test_only_jobs_whose_policy_asks_are_caught_up():
    assert {name: job.missed for name, job in JOBS.items() if job.missed is not
            MissedRuns.SKIP} == {"badge_assignment": MissedRuns.ALL,
                                 "log_rotation": MissedRuns.LATEST}


def test_the_latest_slot_of_a_job_that_never_ran_is_missed(conn):
    assert missed(conn) == {"badge_assignment": BADGES, "log_rotation": LOGS}


def test_days_of_missed_slots_coalesce_into_the_latest_one(conn):
    record(conn, "log_rotation", LOGS - timedelta(days=3), "succeeded")
    assert missed_of(conn, "log_rotation") == [LOGS]


def test_every_missed_badge_day_within_the_window_is_run(conn):
    for days_ago in (0, 2, 3, 4, 5, 6):
        record(conn, "badge_assignment", BADGES - timedelta(days=days_ago), "succeeded")
    record(conn, "badge_assignment", BADGES - timedelta(days=9), "failed",
           attempt=1)  # out of the window: left to an operator's backfill
    assert missed_of(conn, "badge_assignment") == [BADGES - timedelta(days=1)]
    conn.execute("DELETE FROM job_runs")
    assert missed_of(conn, "badge_assignment") == [BADGES - timedelta(days=d)
                                                   for d in range(6, -1, -1)]


def test_a_succeeded_slot_is_not_missed(conn):
    record(conn, "log_rotation", LOGS, "succeeded")
    record(conn, "badge_assignment", BADGES, "succeeded")
    assert "log_rotation" not in missed(conn)
    assert BADGES not in missed_of(conn, "badge_assignment")


def test_a_skipped_slot_is_missed(conn):
    record(conn, "badge_assignment", BADGES, "skipped", skip_reason="locked")
    assert "badge_assignment" in missed(conn)


def test_a_failed_slot_is_missed_while_attempts_remain(conn):
    attempts = 1 + JOBS["badge_assignment"].max_retries
    record(conn, "badge_assignment", BADGES, "failed", attempt=attempts - 1)
    record(conn, "log_rotation", LOGS, "failed", attempt=1 + JOBS["log_rotation"].max_retries)
    assert missed(conn) == {"badge_assignment": BADGES}


def test_a_paused_job_waits_for_its_resume(conn):
    conn.execute("INSERT INTO job_settings (job, paused) VALUES ('badge_assignment', true)")
    assert "badge_assignment" not in missed(conn)


def test_a_running_slot_is_missed_only_once_abandoned(db, conn):
    with db.connect() as owner:
        alive = owner.execute("SELECT pid, backend_start FROM pg_stat_activity"
                              " WHERE pid = pg_backend_pid()").fetchone()
        record(conn, "badge_assignment", BADGES, "running", backend_pid=alive["pid"],
               backend_start=alive["backend_start"],
               deadline=datetime.now(UTC) + timedelta(hours=1))  # a real-time lease
        assert BADGES not in missed_of(conn, "badge_assignment")
    # its owner's session is gone now
    assert BADGES in missed_of(conn, "badge_assignment")
    assert conn.execute("SELECT status FROM job_runs WHERE job = 'badge_assignment'"
                        ).fetchone()["status"] == "abandoned"


def test_a_slot_is_not_missed_before_its_own_message_had_time(conn):
    just_after = BADGES + timedelta(minutes=1)
    assert BADGES not in missed_of(conn, "badge_assignment", now=just_after)
    assert BADGES in missed_of(conn, "badge_assignment", now=BADGES + timedelta(minutes=3))


def test_the_catch_up_run_asks_for_each_missed_slot_once(conn):
    sent = []
    options = replace(OPTIONS, send=lambda name, slot: sent.append((name, slot)))

    minute = NOW
    first = run_job(conn, JOBS["catch_up"], minute, options)
    assert first.status is Status.SUCCEEDED
    assert len(first.result["missed"]) == 8  # a week of badge days and today's log rotation
    # newest first, one slot a job a run: the rest follow in the next minutes' runs
    assert sorted(sent) == [("badge_assignment", BADGES.astimezone(UTC)),
                            ("log_rotation", LOGS.astimezone(UTC))]
    ran = []
    while sent:
        for name, slot in sent:  # the workers run what was sent
            assert run_job(conn, JOBS[name], slot, OPTIONS).status is Status.SUCCEEDED
        ran += sent
        sent.clear()
        minute += timedelta(minutes=1)
        assert run_job(conn, JOBS["catch_up"], minute, options).status is Status.SUCCEEDED
    badge_days = [slot for name, slot in ran if name == "badge_assignment"]
    assert badge_days == [(BADGES - timedelta(days=d)).astimezone(UTC) for d in range(7)]
    assert [slot for name, slot in ran if name == "log_rotation"] == [LOGS.astimezone(UTC)]


def test_without_a_broker_the_catch_up_reports_what_it_missed_and_sends_nothing(conn):
    outcome = run_job(conn, JOBS["catch_up"], NOW, OPTIONS)
    assert len(outcome.result["missed"]) == 8 and outcome.result["sent"] == []
