"""The run contract on a real PostgreSQL: dedupe, lock, record, pause, abandonment."""

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from workers.runs import RunOptions, Status, run_job, slot_of
from workers.schedule import JOBS, LOCK_NAMESPACE, Job

OPTIONS = RunOptions(timezone=ZoneInfo("Asia/Kolkata"), lock_timeout_ms=2000,
                     abandon_grace=timedelta(seconds=60))
JOB = JOBS["coin_deduction"]
SLOT = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


class Recorder:
    """A work function that counts its calls and writes one user per call, so a test can
    see both that it ran and whether its writes survived."""

    def __init__(self, fail_times: int = 0, result: object = None):
        self.calls = 0
        self.fail_times = fail_times
        self.result = result

    def __call__(self, conn, run):
        self.calls += 1
        conn.execute("INSERT INTO users (username, dob, phone) VALUES (%s, '2000-01-01', %s)",
                     [f"u{self.calls}", f"+91{self.calls:010d}"])
        if self.calls <= self.fail_times:
            raise RuntimeError(f"boom {self.calls}")
        return self.result if self.result is not None else {"slot": run.scheduled_for}


def runs(conn, job=JOB.name):
    return conn.execute("SELECT * FROM job_runs WHERE job = %s ORDER BY scheduled_for",
                        [job]).fetchall()


def users(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM users").fetchone()["n"]


def test_a_run_is_recorded_with_its_result_duration_and_owner(conn):
    outcome = run_job(conn, JOB, Recorder(), SLOT, OPTIONS, trigger="cli")

    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"slot": SLOT.isoformat()}
    [row] = runs(conn)
    assert row["status"] == "succeeded" and row["attempt"] == 1 and row["trigger"] == "cli"
    assert row["scheduled_for"] == SLOT
    assert row["result"] == {"slot": SLOT.isoformat()}
    assert row["duration"] is not None and row["finished_at"] >= row["started_at"]
    assert row["host"] and row["pid"] and row["backend_pid"]


def test_duplicate_slot_runs_once(conn):
    work = Recorder()
    first = run_job(conn, JOB, work, SLOT, OPTIONS)
    second = run_job(conn, JOB, work, SLOT + timedelta(seconds=42), OPTIONS)

    assert first.status is Status.SUCCEEDED
    assert second.status is Status.DUPLICATE
    assert "already succeeded" in second.reason
    assert work.calls == 1 and users(conn) == 1
    assert len(runs(conn)) == 1


def test_every_instant_of_a_minute_is_the_same_slot():
    assert slot_of(datetime(2026, 11, 22, 16, 0, 59, 999999, tzinfo=ZoneInfo("Asia/Kolkata"))) \
        == datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def test_a_naive_scheduled_for_is_refused(conn):
    with pytest.raises(ValueError, match="timezone"):
        run_job(conn, JOB, Recorder(), datetime(2026, 11, 22, 10, 30), OPTIONS)
    assert runs(conn) == []


def test_a_failed_run_rolls_back_and_its_retry_is_the_same_run(conn):
    work = Recorder(fail_times=1)

    failed = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert failed.status is Status.FAILED and "boom 1" in failed.error
    assert isinstance(failed.exception, RuntimeError)
    assert users(conn) == 0, "the failed attempt's writes must roll back"
    [row] = runs(conn)
    assert row["status"] == "failed" and "boom 1" in row["error"]

    retried = run_job(conn, JOB, work, SLOT, OPTIONS, trigger="retry")
    assert retried.status is Status.SUCCEEDED and retried.attempt == 2
    [row] = runs(conn)
    assert (row["status"], row["attempt"], row["error"]) == ("succeeded", 2, None)
    assert users(conn) == 1


def test_lock_held_elsewhere_records_skipped_and_the_slot_can_run_later(db, conn):
    with db.connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, JOB.lock_id])
        work = Recorder()
        skipped = run_job(conn, JOB, work, SLOT, OPTIONS)

    assert skipped.status is Status.SKIPPED and skipped.reason.startswith("locked")
    assert work.calls == 0
    [row] = runs(conn)
    assert row["status"] == "skipped" and row["skip_reason"].startswith("locked")

    again = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert again.status is Status.SUCCEEDED and again.attempt == 2


def test_the_lock_is_held_by_the_work_transaction(db, conn):
    def work(conn, run):
        with db.connect() as other:
            taken = other.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS ok",
                                  [LOCK_NAMESPACE, JOB.lock_id]).fetchone()["ok"]
        return {"other_could_lock": taken}

    outcome = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert outcome.result == {"other_could_lock": False}
    with db.connect() as other, other.transaction():
        assert other.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS ok",
                             [LOCK_NAMESPACE, JOB.lock_id]).fetchone()["ok"]


def test_jobs_have_distinct_locks(db, conn):
    with db.connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                      [LOCK_NAMESPACE, JOBS["badge_assignment"].lock_id])
        assert run_job(conn, JOB, Recorder(), SLOT, OPTIONS).status is Status.SUCCEEDED
    assert len({job.lock_id for job in JOBS.values()}) == len(JOBS)


def test_paused_job_records_skipped_and_does_nothing_until_resumed(conn):
    conn.execute("INSERT INTO job_settings (job, paused) VALUES (%s, true)", [JOB.name])
    work = Recorder()

    paused = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert (paused.status, paused.reason, work.calls) == (Status.SKIPPED, "paused", 0)
    assert runs(conn)[0]["skip_reason"] == "paused"

    conn.execute("UPDATE job_settings SET paused = false WHERE job = %s", [JOB.name])
    resumed = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert resumed.status is Status.SUCCEEDED and work.calls == 1


def test_job_overrides_reach_the_work_as_params(conn):
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES (%s, '{\"batch\": 7}')",
                 [JOB.name])
    outcome = run_job(conn, JOB, lambda conn, run: dict(run.params), SLOT, OPTIONS)
    assert outcome.result == {"batch": 7}


def insert_running(conn, *, backend_pid: int, backend_start, deadline: timedelta):
    conn.execute(
        "INSERT INTO job_runs (job, scheduled_for, status, host, pid, backend_pid,"
        " backend_start, deadline) VALUES (%s, %s, 'running', 'elsewhere', 1, %s, %s,"
        " now() + %s)", [JOB.name, SLOT, backend_pid, backend_start, deadline])


def test_a_run_whose_worker_is_alive_is_not_run_again(db, conn):
    with db.connect() as owner:
        me = owner.execute("SELECT pid, backend_start FROM pg_stat_activity"
                           " WHERE pid = pg_backend_pid()").fetchone()
        insert_running(conn, backend_pid=me["pid"], backend_start=me["backend_start"],
                       deadline=timedelta(minutes=5))
        outcome = run_job(conn, JOB, Recorder(), SLOT, OPTIONS)
    assert outcome.status is Status.DUPLICATE and "already running" in outcome.reason


@pytest.mark.parametrize("case", ["backend gone", "past deadline"])
def test_an_abandoned_run_is_recognised_and_run_again(db, conn, case):
    with db.connect() as owner:
        me = owner.execute("SELECT pid, backend_start FROM pg_stat_activity"
                           " WHERE pid = pg_backend_pid()").fetchone()
    if case == "backend gone":  # `owner` is closed: its backend has exited
        insert_running(conn, backend_pid=me["pid"], backend_start=me["backend_start"],
                       deadline=timedelta(minutes=5))
    else:  # a live backend (ours), but the run overstayed its deadline
        mine = conn.execute("SELECT pid, backend_start FROM pg_stat_activity"
                            " WHERE pid = pg_backend_pid()").fetchone()
        insert_running(conn, backend_pid=mine["pid"], backend_start=mine["backend_start"],
                       deadline=-timedelta(seconds=1))

    outcome = run_job(conn, JOB, Recorder(), SLOT, OPTIONS)
    assert outcome.status is Status.SUCCEEDED and outcome.attempt == 2


def test_a_statement_past_the_time_limit_is_cancelled_and_rolled_back(conn):
    quick = Job(name=JOB.name, cron=JOB.cron, description="", lock_id=JOB.lock_id,
                time_limit=timedelta(milliseconds=200))

    def slow(conn, run):
        Recorder()(conn, run)
        conn.execute("SELECT pg_sleep(5)")
        return {}

    outcome = run_job(conn, quick, slow, SLOT, OPTIONS)
    assert outcome.status is Status.FAILED and "QueryCanceled" in outcome.error
    assert users(conn) == 0
    # the timeout was local to the run's transaction
    assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "0"


def test_a_result_that_is_not_a_dict_fails_the_run(conn):
    outcome = run_job(conn, JOB, Recorder(result=[1, 2]), SLOT, OPTIONS)
    assert outcome.status is Status.FAILED and "must return a dict" in outcome.error
    assert users(conn) == 0


def test_after_commit_steps_run_after_commit_and_cannot_undo_it(conn, caplog):
    seen = []

    def work(conn, run):
        Recorder()(conn, run)
        run.after_commit(lambda: seen.append(users_elsewhere()))
        run.after_commit(lambda: 1 / 0)
        run.after_commit(lambda: seen.append("third"))
        return {}

    def users_elsewhere():  # another connection sees the commit
        with psycopg.connect(conn.info.dsn) as other:
            return other.execute("SELECT count(*) FROM users").fetchone()[0]

    outcome = run_job(conn, JOB, work, SLOT, OPTIONS)
    assert outcome.status is Status.SUCCEEDED
    assert seen == [1, "third"]
    assert "after-commit step failed" in caplog.text
    assert runs(conn)[0]["status"] == "succeeded"


def test_the_work_sees_its_logical_time_in_the_business_timezone(conn):
    outcome = run_job(conn, JOB, lambda conn, run: {"local": run.local_time.isoformat()},
                      SLOT, OPTIONS)
    assert outcome.result == {"local": "2026-11-22T16:00:00+05:30"}


def sleeping(seconds: float):
    """A work function that takes `seconds` in the database."""
    def work(conn, run):
        conn.execute("SELECT pg_sleep(%s)", [seconds])
        return {}
    return work


def test_a_run_past_half_its_time_limit_is_reported_with_what_to_do(conn, caplog):
    billing = replace(JOB, time_limit=timedelta(milliseconds=400))
    with caplog.at_level(logging.WARNING, logger="workers.alerts"):
        assert run_job(conn, billing, sleeping(0.25), SLOT, OPTIONS).status == Status.SUCCEEDED
        assert run_job(conn, billing, sleeping(0), SLOT + timedelta(minutes=1),
                       OPTIONS).status == Status.SUCCEEDED

    [warning] = caplog.messages  # the quick run is not reported
    assert warning.startswith(f"coin_deduction {SLOT.isoformat()} took 0.")
    assert "of its 0.4 s time limit. Split billing further: raise BILLING_SHARDS." in warning


def test_only_billing_is_told_to_shard(conn, caplog):
    other = replace(JOBS["presence_cleanup"], time_limit=timedelta(milliseconds=400))
    with caplog.at_level(logging.WARNING, logger="workers.alerts"):
        run_job(conn, other, sleeping(0.25), SLOT, OPTIONS)
    [warning] = caplog.messages
    assert warning.endswith("of its 0.4 s time limit.")
