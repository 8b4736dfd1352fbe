"""The run contract on a real PostgreSQL: dedupe, lock, record, pause, abandonment,
parameters, and what its hooks are told."""

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from workers.engine.hooks import Claimed, Finished, Hooks, Started, Subscriber
from workers.engine.jobs import LOCK_NAMESPACE
from workers.engine.runs import RunOptions, Status, run_job, slot_of
from workers.observability.logs import RUN_LOGGER, RunLog
from workers.schedule import JOBS

OPTIONS = RunOptions(timezone=ZoneInfo("Asia/Kolkata"), lock_timeout_ms=2000,
                     abandon_grace=timedelta(seconds=60), hooks=Hooks(RunLog()))
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
    outcome = run_job(conn, JOB, SLOT, OPTIONS, trigger="cli", work=Recorder())

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
    first = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    second = run_job(conn, JOB, SLOT + timedelta(seconds=42), OPTIONS, work=work)

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
        run_job(conn, JOB, datetime(2026, 11, 22, 10, 30), OPTIONS, work=Recorder())
    assert runs(conn) == []


def test_a_failed_run_rolls_back_and_its_retry_is_the_same_run(conn):
    work = Recorder(fail_times=1)

    failed = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert failed.status is Status.FAILED and "boom 1" in failed.error
    assert isinstance(failed.exception, RuntimeError)
    assert users(conn) == 0, "the failed attempt's writes must roll back"
    [row] = runs(conn)
    assert row["status"] == "failed" and "boom 1" in row["error"]

    retried = run_job(conn, JOB, SLOT, OPTIONS, trigger="retry", work=work)
    assert retried.status is Status.SUCCEEDED and retried.attempt == 2
    [row] = runs(conn)
    assert (row["status"], row["attempt"], row["error"]) == ("succeeded", 2, None)
    assert users(conn) == 1


def test_lock_held_elsewhere_records_skipped_and_the_slot_can_run_later(db, conn):
    with db.connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, JOB.lock_id])
        work = Recorder()
        skipped = run_job(conn, JOB, SLOT, OPTIONS, work=work)

    assert skipped.status is Status.SKIPPED and skipped.reason.startswith("locked")
    assert work.calls == 0
    [row] = runs(conn)
    assert row["status"] == "skipped" and row["skip_reason"].startswith("locked")

    again = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert again.status is Status.SUCCEEDED and again.attempt == 2


def test_the_lock_is_held_by_the_work_transaction(db, conn):
    def work(conn, run):
        with db.connect() as other:
            taken = other.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS ok",
                                  [LOCK_NAMESPACE, JOB.lock_id]).fetchone()["ok"]
        return {"other_could_lock": taken}

    outcome = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert outcome.result == {"other_could_lock": False}
    with db.connect() as other, other.transaction():
        assert other.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS ok",
                             [LOCK_NAMESPACE, JOB.lock_id]).fetchone()["ok"]


def test_jobs_have_distinct_locks(db, conn):
    with db.connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                      [LOCK_NAMESPACE, JOBS["badge_assignment"].lock_id])
        assert run_job(conn, JOB, SLOT, OPTIONS, work=Recorder()).status is Status.SUCCEEDED
    assert len({job.lock_id for job in JOBS.values()}) == len(JOBS)


def test_paused_job_records_skipped_and_does_nothing_until_resumed(conn):
    conn.execute("INSERT INTO job_settings (job, paused) VALUES (%s, true)", [JOB.name])
    work = Recorder()

    paused = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert (paused.status, paused.reason, work.calls) == (Status.SKIPPED, "paused", 0)
    assert runs(conn)[0]["skip_reason"] == "paused"

    conn.execute("UPDATE job_settings SET paused = false WHERE job = %s", [JOB.name])
    resumed = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert resumed.status is Status.SUCCEEDED and work.calls == 1


def params_of(conn, run):
    return run.params.model_dump()


def test_a_jobs_parameters_default_to_the_settings_of_their_names(conn):
    options = replace(OPTIONS, settings={"heartbeat_timeout_seconds": 90, "unrelated": 1})
    assert run_job(conn, JOB, SLOT, options, work=params_of).result == {
        "heartbeat_timeout_seconds": 90, "heartbeat_slack_seconds": 60, "max_call_minutes": 240}
    assert run_job(conn, JOB, SLOT + timedelta(minutes=1), OPTIONS, work=params_of).result[
        "heartbeat_timeout_seconds"] == 120  # no setting: the model's own default


def test_job_overrides_reach_the_work_as_typed_params(conn):
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES (%s, %s)",
                 [JOB.name, '{"heartbeat_timeout_seconds": 90}'])
    options = replace(OPTIONS, settings={"heartbeat_timeout_seconds": 45})
    outcome = run_job(conn, JOB, SLOT, options,
                      work=lambda conn, run: {"timeout": run.params.heartbeat_timeout_seconds})
    assert outcome.result == {"timeout": 90}


@pytest.mark.parametrize(("overrides", "error"), [
    ('{"heartbeat_timeout_seconds": 5}', "heartbeat_timeout_seconds: Input should be greater"
                                         " than or equal to 10 (got 5)"),
    ('{"heartbeat_timeout_seconds": "90"}', "heartbeat_timeout_seconds: Input should be a"
                                            " valid integer (got '90')"),
    ('{"heartbeat_timeout": 90}', "unknown parameter 'heartbeat_timeout'"),
], ids=["out of range", "a string", "misspelt"])
def test_a_bad_override_fails_the_run_with_its_reason_before_any_work(conn, overrides, error):
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES (%s, %s)",
                 [JOB.name, overrides])
    work = Recorder()
    outcome = run_job(conn, JOB, SLOT, OPTIONS, work=work)

    assert outcome.status is Status.FAILED
    assert outcome.error == f"InvalidParams: coin_deduction: {error}"
    assert (work.calls, users(conn)) == (0, 0)
    [row] = runs(conn)
    assert (row["status"], row["error"]) == ("failed", outcome.error)


class Told(Subscriber):
    """A subscriber that keeps what it is told; one that raises, when asked to."""

    def __init__(self, fails: bool = False):
        self.events = []
        self.fails = fails

    def run_claimed(self, event):
        self.events.append(event)
        if self.fails:
            raise RuntimeError("a broken subscriber")

    def run_started(self, event):
        self.run_claimed(event)

    def run_finished(self, event):
        self.run_claimed(event)


def test_the_hooks_hear_the_claim_the_start_under_the_lock_then_the_outcome(conn):
    told = Told()
    outcome = run_job(conn, JOB, SLOT, replace(OPTIONS, hooks=Hooks(told)), trigger="cli",
                      work=Recorder())

    claimed, started, finished = told.events
    assert isinstance(claimed, Claimed) and isinstance(finished, Finished)
    assert isinstance(started, Started) and started.run_id == claimed.run_id
    assert (claimed.job, claimed.scheduled_for, claimed.attempt, claimed.trigger) == (
        JOB, SLOT, 1, "cli")
    assert claimed.run_id == runs(conn)[0]["run_id"]
    assert (finished.job, finished.outcome, finished.trigger) == (JOB, outcome, "cli")
    assert finished.duration > 0 and not finished.near_limit


def test_the_duration_told_is_the_transactions_not_its_after_commit_steps(conn):
    told, marks = Told(), {}

    def work(conn, run):
        def slow_redis():  # a slow after-commit step: not what the time limit bounds
            marks["after_commit"] = time.monotonic()
            time.sleep(0.2)
        run.after_commit(slow_redis)
        return {}

    began = time.monotonic()
    run_job(conn, JOB, SLOT, replace(OPTIONS, hooks=Hooks(told)), work=work)

    _, _, finished = told.events
    assert began + finished.duration <= marks["after_commit"]


def test_a_duplicate_is_told_as_finished_without_a_claim(conn):
    run_job(conn, JOB, SLOT, OPTIONS, work=Recorder())
    told = Told()
    run_job(conn, JOB, SLOT, replace(OPTIONS, hooks=Hooks(told)), work=Recorder())

    [finished] = told.events
    assert finished.outcome.status is Status.DUPLICATE and finished.duration == 0


@pytest.mark.parametrize("status", ["failed", "skipped"])
def test_failed_and_skipped_runs_are_told_too(conn, status):
    told = Told()
    if status == "skipped":
        conn.execute("INSERT INTO job_settings (job, paused) VALUES (%s, true)", [JOB.name])
    run_job(conn, JOB, SLOT, replace(OPTIONS, hooks=Hooks(told)),
            work=Recorder(fail_times=1))

    claimed, *started, finished = told.events
    assert finished.outcome.status == status and finished.outcome.attempt == claimed.attempt
    # A failed run had started its work; a paused one never did.
    assert [type(event) for event in started] == ([Started] if status == "failed" else [])


def test_a_failing_subscriber_changes_nothing_and_the_others_are_still_told(conn, caplog):
    broken, after = Told(fails=True), Told()
    outcome = run_job(conn, JOB, SLOT, replace(OPTIONS, hooks=Hooks(broken, after)),
                      work=Recorder())

    assert outcome.status is Status.SUCCEEDED and runs(conn)[0]["status"] == "succeeded"
    assert len(broken.events) == len(after.events) == 3
    assert [line for line in caplog.messages if line.startswith("run hook")] == [
        f"run hook Told.{hook} failed on coin_deduction {SLOT.isoformat()}"
        for hook in ("run_claimed", "run_started", "run_finished")]


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
        outcome = run_job(conn, JOB, SLOT, OPTIONS, work=Recorder())
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

    outcome = run_job(conn, JOB, SLOT, OPTIONS, work=Recorder())
    assert outcome.status is Status.SUCCEEDED and outcome.attempt == 2


def test_a_statement_past_the_time_limit_is_cancelled_and_rolled_back(conn):
    quick = replace(JOB, time_limit=timedelta(milliseconds=200))

    def slow(conn, run):
        Recorder()(conn, run)
        conn.execute("SELECT pg_sleep(5)")
        return {}

    outcome = run_job(conn, quick, SLOT, OPTIONS, work=slow)
    assert outcome.status is Status.FAILED and "QueryCanceled" in outcome.error
    assert users(conn) == 0
    # the timeout was local to the run's transaction
    assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "0"


def test_a_result_that_is_not_a_dict_fails_the_run(conn):
    outcome = run_job(conn, JOB, SLOT, OPTIONS, work=Recorder(result=[1, 2]))
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

    outcome = run_job(conn, JOB, SLOT, OPTIONS, work=work)
    assert outcome.status is Status.SUCCEEDED
    assert seen == [1, "third"]
    assert "after-commit step failed" in caplog.text
    assert runs(conn)[0]["status"] == "succeeded"


def test_the_work_sees_its_logical_time_in_the_business_timezone(conn):
    outcome = run_job(conn, JOB, SLOT, OPTIONS,
                      work=lambda conn, run: {"local": run.local_time.isoformat()})
    assert outcome.result == {"local": "2026-11-22T16:00:00+05:30"}


def sleeping(seconds: float):
    """A work function that takes `seconds` in the database."""
    def work(conn, run):
        conn.execute("SELECT pg_sleep(%s)", [seconds])
        return {}
    return work


def test_a_run_past_half_its_time_limit_is_reported_with_what_to_do(conn, caplog):
    billing = replace(JOB, time_limit=timedelta(milliseconds=400))
    with caplog.at_level(logging.WARNING, logger=RUN_LOGGER):
        assert run_job(conn, billing, SLOT, OPTIONS, work=sleeping(0.25)).status \
            == Status.SUCCEEDED
        assert run_job(conn, billing, SLOT + timedelta(minutes=1), OPTIONS,
                       work=sleeping(0)).status == Status.SUCCEEDED

    [warning] = caplog.messages  # the quick run is not reported
    assert warning.startswith(f"coin_deduction {SLOT.isoformat()} took 0.")
    assert "of its 0.4 s time limit. Split billing further: raise BILLING_SHARDS." in warning


def test_only_billing_is_told_to_shard(conn, caplog):
    other = replace(JOBS["presence_cleanup"], time_limit=timedelta(milliseconds=400))
    with caplog.at_level(logging.WARNING, logger=RUN_LOGGER):
        run_job(conn, other, SLOT, OPTIONS, work=sleeping(0.25))
    [warning] = caplog.messages
    assert warning.endswith("of its 0.4 s time limit.")
