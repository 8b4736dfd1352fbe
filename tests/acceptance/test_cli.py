"""Acceptance tests of the operator's command line, `python -m workers`, run as a real
subprocess against the session's PostgreSQL and Redis.

Exit codes under test: 0 done (skipped and duplicate included), 1 the job failed, 2 bad
usage or a bad setting, 3 a service unreachable or the schema missing.
"""

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from chaos.saathii_api import SaathiiApi
from workers.engine.db import SCHEMA_VERSION
from workers.engine.jobs import LOCK_NAMESPACE
from workers.schedule import JOBS

pytestmark = pytest.mark.acceptance

JOB = "presence_cleanup"
DEAD_DATABASE = "postgresql://postgres@127.0.0.1:1/x"
DEAD_REDIS = "redis://127.0.0.1:1/0"


def runner(base_env: dict[str, str], directory):
    """`run(*ARGS, **ENV)` runs `python -m workers ARGS` in `directory` (empty, so no .env
    file is read), with ENV overriding `base_env`."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "workers", *args],
                              env={**base_env, **env}, cwd=directory, capture_output=True,
                              text=True, timeout=60)

    return run


@pytest.fixture
def cli(db, tmp_path):
    """The CLI pointed at a fresh test database and the session's Redis."""
    return runner(db.env(), tmp_path)


@pytest.fixture
def offline_cli(tmp_path):
    """The CLI with no database nor Redis to reach: for what must fail before using them."""
    return runner({**os.environ, "DATABASE_URL": DEAD_DATABASE, "REDIS_URL": DEAD_REDIS},
                  tmp_path)


def last_json(result: subprocess.CompletedProcess):
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr}"
    return json.loads(lines[-1])


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def job_runs(db, job: str | None = None) -> list[dict]:
    with db.connect() as conn:
        return conn.execute(
            "SELECT * FROM job_runs WHERE %(job)s::text IS NULL OR job = %(job)s"
            " ORDER BY run_id", {"job": job}).fetchall()


# run-task ------------------------------------------------------------------------------


@pytest.mark.parametrize("job", list(JOBS))
def test_run_task_runs_the_job_and_prints_a_succeeded_outcome(cli, db, job):
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    result = cli("run-task", job)
    after = datetime.now(UTC).replace(second=0, microsecond=0)

    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "succeeded"
    assert outcome["job"] == job
    slot = datetime.fromisoformat(outcome["scheduled_for"])
    assert slot.utcoffset() == timedelta(0)
    assert slot.second == slot.microsecond == 0
    assert before <= slot <= after
    assert isinstance(outcome["result"], dict)
    [row] = job_runs(db, job)
    assert row["status"] == "succeeded"
    assert row["trigger"] == "cli"
    assert row["scheduled_for"] == slot
    assert row["result"] == outcome["result"]


def test_run_task_gives_coins_as_integers_and_money_as_decimal_strings(cli, db):
    with db.connect() as conn:
        conn.execute("INSERT INTO users (username, dob, phone) VALUES ('c', '2000-01-01', '+1'),"
                     " ('l', '2000-01-01', '+2')")
        conn.execute("INSERT INTO user_wallets (user_id, balance_coins) VALUES (1, 90), (2, 0)")
        conn.execute("INSERT INTO user_status (user_id, last_seen) VALUES"
                     " (1, '2026-11-22T10:05Z'), (2, '2026-11-22T10:05Z')")
        conn.execute("INSERT INTO user_calls (user_id, listener_id, call_type, start_time,"
                     " coins_spent) VALUES (1, 2, 'audio', '2026-11-22T10:00Z', 0)")

    result = cli("run-task", "coin_deduction", "--as-of", "2026-11-22T10:02:30Z")

    outcome = last_json(result)
    assert outcome["status"] == "succeeded", outcome
    assert (outcome["result"]["coins_charged"], outcome["result"]["minutes_charged"]) == (30, 3)
    assert outcome["result"]["money_earned"] == "0.00"


def test_run_task_twice_for_the_same_slot_is_a_duplicate_and_runs_once(cli, db):
    first = cli("run-task", JOB, "--as-of", "2026-11-22T00:01:10+05:30")
    second = cli("run-task", JOB, "--as-of", "2026-11-22T00:01:50+05:30")  # same minute

    assert first.returncode == 0, first.stderr
    assert last_json(first)["status"] == "succeeded"
    assert second.returncode == 0, second.stderr
    outcome = last_json(second)
    assert outcome["status"] == "duplicate"
    assert outcome["scheduled_for"] == "2026-11-21T18:31:00+00:00"
    assert "succeeded" in outcome["reason"]
    assert len(job_runs(db, JOB)) == 1


@pytest.mark.parametrize(("as_of", "slot"), [
    pytest.param("2026-11-22", "2026-11-21T18:30:00+00:00", id="date-is-local-midnight"),
    pytest.param("2026-11-22T06:00:45", "2026-11-22T00:30:00+00:00", id="naive-is-local"),
    pytest.param("2026-11-22T06:00:45Z", "2026-11-22T06:00:00+00:00", id="aware-utc"),
    pytest.param("2026-11-22T06:00:45.123+02:00", "2026-11-22T04:00:00+00:00",
                 id="aware-offset"),
])
def test_run_task_as_of_sets_the_slot_in_app_timezone(cli, db, as_of, slot):
    result = cli("run-task", JOB, "--as-of", as_of, APP_TIMEZONE="Asia/Kolkata")

    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "succeeded"
    assert outcome["scheduled_for"] == slot
    [row] = job_runs(db, JOB)
    assert row["scheduled_for"] == datetime.fromisoformat(slot)


@pytest.mark.parametrize("as_of", ["yesterday", "not-a-date", "2026-11-22T25:00"])
def test_run_task_with_a_garbage_as_of_is_bad_usage_and_writes_nothing(cli, db, as_of):
    result = cli("run-task", JOB, "--as-of", as_of)

    assert result.returncode == 2
    assert "--as-of" in one_error_line(result)
    assert result.stdout == ""
    assert job_runs(db) == []


def test_run_task_with_an_empty_as_of_is_bad_usage_not_now(cli, db):
    result = cli("run-task", JOB, "--as-of", "")

    assert result.returncode == 2, result.stdout
    assert "--as-of" in one_error_line(result)
    assert job_runs(db) == []


@pytest.mark.parametrize("as_of", ["0001-01-01", "9999-12-31T23:59:59-05:00"])
def test_run_task_with_an_as_of_out_of_range_is_bad_usage(cli, db, as_of):
    result = cli("run-task", JOB, "--as-of", as_of)

    assert result.returncode == 2, result.stderr
    assert "--as-of" in one_error_line(result)
    assert job_runs(db) == []


def test_run_task_of_an_unknown_job_is_bad_usage_listing_the_valid_jobs(cli, db):
    result = cli("run-task", "no_such_job")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no_such_job" in result.stderr
    for name in JOBS:
        assert name in result.stderr
    assert job_runs(db) == []


def test_run_task_of_a_failing_job_exits_1_and_records_the_failure(cli, db):
    with db.connect() as conn:
        conn.execute("DROP TABLE user_status")  # presence_cleanup's work now raises

    result = cli("run-task", JOB, "--as-of", "2026-11-22T10:00Z")

    assert result.returncode == 1
    outcome = last_json(result)
    assert outcome["status"] == "failed"
    assert "UndefinedTable" in outcome["error"]
    [row] = job_runs(db, JOB)
    assert (row["status"], row["attempt"]) == ("failed", 1)
    assert "user_status" in row["error"]


def test_run_task_while_another_run_holds_the_jobs_lock_is_skipped(cli, db):
    job = JOBS[JOB]
    with db.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, job.lock_id))
        locked = cli("run-task", JOB, "--as-of", "2026-11-22T10:00Z")

    assert locked.returncode == 0, locked.stderr
    outcome = last_json(locked)
    assert outcome["status"] == "skipped"
    assert outcome["reason"].startswith("locked")

    again = cli("run-task", JOB, "--as-of", "2026-11-22T10:00Z")  # lock released

    assert (last_json(again)["status"], last_json(again)["attempt"]) == ("succeeded", 2)
    [row] = job_runs(db, JOB)
    assert (row["status"], row["attempt"]) == ("succeeded", 2)


@pytest.mark.parametrize("args", [
    pytest.param((), id="no-subcommand"),
    pytest.param(("history", "--limit", "0"), id="history-limit-0"),
    pytest.param(("history", "--limit", "many"), id="history-limit-not-a-number"),
    pytest.param(("pause", "no_such_job"), id="pause-unknown-job"),
])
def test_bad_usage_exits_2_before_connecting_without_a_traceback(offline_cli, args):
    result = offline_cli(*args)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


# pause / resume ------------------------------------------------------------------------


def test_paused_job_records_a_skipped_run_and_resume_lets_it_run(cli, db):
    paused = cli("pause", JOB)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == f"{JOB} paused"

    skipped = cli("run-task", JOB, "--as-of", "2026-11-22T10:00:00Z")
    assert skipped.returncode == 0, skipped.stderr
    outcome = last_json(skipped)
    assert (outcome["status"], outcome["reason"]) == ("skipped", "paused")
    assert "result" not in outcome

    again = cli("pause", JOB)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{JOB} paused (already)"

    resumed = cli("resume", JOB)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == f"{JOB} resumed"

    ran = cli("run-task", JOB, "--as-of", "2026-11-22T10:05:00Z")
    assert ran.returncode == 0, ran.stderr
    assert last_json(ran)["status"] == "succeeded"
    rows = job_runs(db, JOB)
    assert [(r["status"], r["skip_reason"]) for r in rows] == [
        ("skipped", "paused"), ("succeeded", None)]


def test_resume_of_a_job_never_paused_says_already(cli):
    result = cli("resume", JOB)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{JOB} resumed (already)"


# params ----------------------------------------------------------------------------------


def overrides_of(db, job: str):
    with db.connect() as conn:
        row = conn.execute("SELECT overrides FROM job_settings WHERE job = %s",
                           [job]).fetchone()
    return None if row is None else row["overrides"]


def test_params_lists_each_parameter_with_its_value_and_where_it_comes_from(cli):
    result = cli("params", "coin_deduction", "--json", HEARTBEAT_TIMEOUT_SECONDS="100")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"parameter": "heartbeat_timeout_seconds", "value": 100, "without_override": 100,
         "override": None, "overridden": False},
        {"parameter": "heartbeat_slack_seconds", "value": 60, "without_override": 60,
         "override": None, "overridden": False},
        {"parameter": "max_call_minutes", "value": 240, "without_override": 240,
         "override": None, "overridden": False}]


def test_params_set_validates_then_writes_and_unset_removes(cli, db):
    first = cli("params", "coin_deduction", "--set", "heartbeat_timeout_seconds=90", "--json")
    assert first.returncode == 0, first.stderr
    row = json.loads(first.stdout)[0]
    assert (row["value"], row["without_override"], row["overridden"]) == (90, 120, True)
    assert overrides_of(db, "coin_deduction") == {"heartbeat_timeout_seconds": 90}

    table = cli("params", "coin_deduction")
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[4:8] == ["heartbeat_timeout_seconds", "90", "120", "True"]

    unset = cli("params", "coin_deduction", "--unset", "heartbeat_timeout_seconds", "--json")
    assert unset.returncode == 0, unset.stderr
    assert json.loads(unset.stdout)[0]["value"] == 120
    assert overrides_of(db, "coin_deduction") == {}


def test_params_takes_text_that_is_not_json_as_a_string(cli, db, tmp_path):
    result = cli("params", "log_rotation", "--set", f"log_dir={tmp_path}", "--json")
    assert result.returncode == 0, result.stderr
    assert overrides_of(db, "log_rotation") == {"log_dir": str(tmp_path)}


@pytest.mark.parametrize(("job", "args", "reason"), [
    ("coin_deduction", ("--set", "heartbeat_timeout_seconds=5"),
     "coin_deduction: heartbeat_timeout_seconds: Input should be greater than or equal to 10"
     " (got 5)"),
    ("coin_deduction", ("--set", 'heartbeat_timeout_seconds="90"'),
     "coin_deduction: heartbeat_timeout_seconds: Input should be a valid integer (got '90')"),
    ("coin_deduction", ("--set", "heartbeat=90"), "coin_deduction: unknown parameter 'heartbeat'"),
    ("coin_deduction", ("--unset", "heartbeat"), "coin_deduction: unknown parameter 'heartbeat'"),
    ("badge_assignment", ("--set", "day=1"), "badge_assignment: unknown parameter 'day'"),
], ids=["out of range", "a string", "unknown name", "unset unknown", "a job without any"])
def test_params_set_refuses_what_the_job_refuses_and_writes_nothing(cli, db, job, args, reason):
    assert cli("params", job, "--set", "heartbeat_timeout_seconds=90").returncode == (
        0 if job == "coin_deduction" else 2)
    before = overrides_of(db, job)

    result = cli("params", job, *args)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert one_error_line(result) == f"saathii-workers: {reason}"
    assert overrides_of(db, job) == before


def test_params_set_needs_a_name_and_a_value(offline_cli):
    result = offline_cli("params", "coin_deduction", "--set", "heartbeat_timeout_seconds")
    assert result.returncode == 2
    assert "expected NAME=VALUE" in result.stderr


# status / history ----------------------------------------------------------------------


def test_status_json_lists_every_job_with_its_schedule_and_last_run(cli, db):
    assert cli("run-task", JOB).returncode == 0
    assert cli("pause", "log_rotation").returncode == 0

    before = datetime.now(UTC)
    result = cli("status", "--json")
    after = datetime.now(UTC)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    rows = status["jobs"]
    assert [row["job"] for row in rows] == list(JOBS)
    assert status["processes"] == []  # no worker or scheduler runs in this test
    for row in rows:
        job = JOBS[row["job"]]
        assert row["cron"] == job.cron
        assert row["timezone"] == "Asia/Kolkata"
        next_run = datetime.fromisoformat(row["next_run"])
        assert next_run.utcoffset() == timedelta(hours=5, minutes=30)
        assert before < next_run <= after + timedelta(days=1)
        if job.cron == "* * * * *":
            assert next_run <= after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        assert row["paused"] is (row["job"] == "log_rotation")
        if row["paused"]:
            assert row["state"] == "paused"
        assert row["last_status"] == ("succeeded" if row["job"] == JOB else None)
    by_job = {row["job"]: row for row in rows}
    assert by_job[JOB]["last_started"] is not None
    assert isinstance(by_job[JOB]["last_duration"], float)


def test_status_prints_a_table_of_every_job(cli):
    result = cli("status")

    assert result.returncode == 0, result.stderr
    jobs, processes = result.stdout.strip().split("\n\n")
    header, *lines = jobs.splitlines()
    assert header.split() == ["job", "cron", "timezone", "next_run", "state", "last_status",
                              "last_started", "last_duration"]
    assert [line.split()[0] for line in lines] == list(JOBS)
    assert processes == "no worker or scheduler has a heartbeat: none is running"
    # Nothing runs them: every job due since the database was made is overdue, and said so.
    assert "coin_deduction is overdue" in result.stderr


def test_history_shows_runs_newest_first_and_filters_by_job_and_limit(cli, db):
    for job, as_of in (("presence_cleanup", "2026-11-22T10:00Z"),
                       ("call_cleanup", "2026-11-22T10:00Z"),
                       ("presence_cleanup", "2026-11-22T10:05Z")):
        assert cli("run-task", job, "--as-of", as_of).returncode == 0

    everything = cli("history", "--json")
    assert everything.returncode == 0, everything.stderr
    rows = json.loads(everything.stdout)
    assert [(r["job"], r["scheduled_for"]) for r in rows] == [
        ("presence_cleanup", "2026-11-22T15:35:00+05:30"),
        ("call_cleanup", "2026-11-22T15:30:00+05:30"),
        ("presence_cleanup", "2026-11-22T15:30:00+05:30"),
    ]
    assert all(r["status"] == "succeeded" and r["trigger"] == "cli" for r in rows)
    assert set(rows[0]["result"]) >= {"marked_offline", "online_users"}  # all of it

    one = cli("history", JOB, "--limit", "1", "--json")
    assert one.returncode == 0, one.stderr
    [row] = json.loads(one.stdout)
    assert (row["job"], row["scheduled_for"]) == (JOB, "2026-11-22T15:35:00+05:30")

    table = cli("history")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.strip().splitlines()
    assert header.split()[:4] == ["started", "job", "scheduled_for", "status"]
    assert [line.split()[1] for line in lines] == [r["job"] for r in rows]
    # Its key figures, whole, never a JSON text cut mid-way.
    detail = re.split(r"\s{2,}", lines[0])[-1]  # the last column
    assert set(detail.split(", ")) == {"marked_offline 0", "back_online 0", "busy_cleared 0",
                                       "online_users 0"}


def test_history_of_an_empty_database_is_an_empty_list(cli):
    result = cli("history", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# --enqueue -----------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["coin_deduction", "presence_cleanup"])
def test_run_task_enqueue_puts_the_message_on_the_jobs_redis_queue(cli, db, job):
    result = cli("run-task", job, "--as-of", "2026-11-22T06:00:45Z", "--enqueue")

    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert outcome["status"] == "enqueued"
    assert outcome["job"] == job
    assert outcome["scheduled_for"] == "2026-11-22T06:00:00+00:00"
    message_id = outcome["message_id"]
    queue = JOBS[job].queue
    # The broker keys a queued message by a Redis id of its own (options.redis_message_id),
    # so a retried message gets a new one; the body carries the Dramatiq message_id.
    with redis.Redis.from_url(db.redis_url) as client:
        [redis_id] = client.lrange(f"dramatiq:{queue}", 0, -1)
        stored = client.hget(f"dramatiq:{queue}.msgs", redis_id)
    assert stored is not None
    message = json.loads(stored)
    assert message["message_id"] == message_id
    assert message["options"]["redis_message_id"] == redis_id.decode()
    assert message["actor_name"] == job
    assert message["queue_name"] == queue
    assert message["args"] == []
    assert datetime.fromisoformat(message["kwargs"]["scheduled_for"]) == \
        datetime(2026, 11, 22, 6, 0, 45, tzinfo=UTC)
    assert job_runs(db) == []


def test_run_task_enqueue_of_a_slot_that_succeeded_says_so_and_sends_nothing(cli, db):
    assert last_json(cli("run-task", JOB, "--as-of", "2026-11-22T06:00:00Z"))["status"] == \
        "succeeded"

    result = cli("run-task", JOB, "--as-of", "2026-11-22T06:00:00Z", "--enqueue")

    assert result.returncode == 0, result.stderr
    outcome = last_json(result)
    assert (outcome["status"], outcome["scheduled_for"]) == ("duplicate",
                                                              "2026-11-22T06:00:00+00:00")
    assert outcome["detail"].startswith("attempt 1 of this slot succeeded")
    assert "not enqueued" in outcome["detail"]
    with redis.Redis.from_url(db.redis_url) as client:
        assert client.llen(f"dramatiq:{JOBS[JOB].queue}") == 0


def test_with_nothing_set_the_cli_finds_the_servers_make_run_started(db, tmp_path):
    """`make run` and `make db` write the embedded servers' URLs to .data/local.env: run
    from the same directory, the CLI uses them and says so, once."""
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "local.env").write_text(
        f"DATABASE_URL={db.url}\nREDIS_URL={db.redis_url}\n")
    bare = {k: v for k, v in db.env().items() if k not in ("DATABASE_URL", "REDIS_URL")}

    result = runner(bare, tmp_path)("history", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert result.stderr.splitlines() == [
        "saathii-workers: using the embedded PostgreSQL and Redis of `make run` / `make db`"
        " (.data/local.env)"]
    named = runner(db.env(), tmp_path)("history", "--json")  # the environment wins, silently
    assert (named.returncode, named.stderr) == (0, "")


# unreachable services, missing schema ---------------------------------------------------


@pytest.mark.parametrize("args", [
    pytest.param(("status",), id="status"),
    pytest.param(("run-task", JOB), id="run-task"),
    pytest.param(("history",), id="history"),
    pytest.param(("pause", JOB), id="pause"),
    pytest.param(("db", "init"), id="db-init"),
])
def test_database_unreachable_exits_3_with_one_line(offline_cli, args):
    result = offline_cli(*args)

    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "database unreachable" in one_error_line(result)
    assert "127.0.0.1:1" in result.stderr


@pytest.mark.parametrize("args", [
    pytest.param(("status",), id="status"),
    pytest.param(("run-task", JOB, "--enqueue"), id="run-task-enqueue"),
])
def test_redis_unreachable_exits_3_with_one_line(cli, db, args):
    result = cli(*args, REDIS_URL=DEAD_REDIS)

    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "redis unreachable" in one_error_line(result)
    assert job_runs(db) == []


def test_run_task_in_process_does_not_need_redis(cli, db):
    result = cli("run-task", JOB, REDIS_URL=DEAD_REDIS)

    assert result.returncode == 0, result.stderr
    assert last_json(result)["status"] == "succeeded"
    assert len(job_runs(db, JOB)) == 1


@pytest.fixture
def empty_database(db):
    """The URL of a database without the schema; dropped afterwards."""
    name = f"empty_{urlsplit(db.url).path.lstrip('/')}"
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield urlsplit(db.url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_missing_schema_exits_3_until_db_init_which_is_idempotent(cli, empty_database):
    for args in (("status",), ("history",), ("run-task", JOB)):
        missing = cli(*args, DATABASE_URL=empty_database)
        assert missing.returncode == 3, (args, missing.stdout, missing.stderr)
        assert "db init" in one_error_line(missing)

    first = cli("db", "init", DATABASE_URL=empty_database)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema version {SCHEMA_VERSION} applied"

    second = cli("db", "init", DATABASE_URL=empty_database)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"schema version {SCHEMA_VERSION} applied"

    status = cli("status", "--json", DATABASE_URL=empty_database)
    assert status.returncode == 0, status.stderr
    assert [row["job"] for row in json.loads(status.stdout)["jobs"]] == list(JOBS)


# settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("APP_TIMEZONE", "Mars/Olympus"),
    ("LOG_LEVEL", "loud"),
    ("DATABASE_URL", "mysql://x"),
    ("REDIS_URL", "http://x"),
    ("PERIODIQ_SKIP_DELAY", "abc"),
    ("DB_LOCK_TIMEOUT_MS", "-5"),
    ("CATCH_UP_ON_BOOT", "perhaps"),
    ("SENTRY_DSN", "not-a-dsn"),
    ("LOG_DIR", "/dev/null/sub"),
    ("REDIS_URL", "redis://127.0.0.1:notaport/0"),
])
def test_bad_setting_exits_2_with_one_line_naming_it(offline_cli, variable, value):
    result = offline_cli("status", **{variable: value})

    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert line.startswith(f"saathii-workers: invalid setting {variable}: "), line
    assert result.stdout == ""


# db init on the Saathii API's own database -----------------------------------------------


def test_db_init_on_the_apis_database_reports_the_calls_it_holds(raw_api_db, tmp_path):
    """A call the API left 'ongoing' days ago (its hang-up fails) is reported: how many,
    the oldest, the coins billing would have charged; `status` keeps warning of it."""
    now = datetime.now(UTC).replace(microsecond=0)
    with raw_api_db.connect() as conn:
        api = SaathiiApi(conn)
        caller = api.register("c", "+9701", "customer", now - timedelta(days=5))
        listener = api.register("l", "+9702", "listener", now - timedelta(days=5))
        api.verify_listener(listener, now - timedelta(days=5))
        api.buy(caller, 500, Decimal("50.00"), now - timedelta(days=5))
        api.start_call(caller, listener, "audio", now - timedelta(days=2))
        for user in (caller, listener):  # they talked 5 minutes, then the apps closed
            api.heartbeat(user, now - timedelta(days=2, minutes=-5))
    cli = runner(raw_api_db.env(), tmp_path)

    init = cli("db", "init")
    assert init.returncode == 0, init.stderr
    applied, report = init.stdout.strip().splitlines()
    assert applied == f"schema version {SCHEMA_VERSION} applied"
    assert report.startswith("adoption: 1 call left 'ongoing'")
    # minutes 2-6 at 10 coins: the 6th started within the slack of the last sighting
    assert "50 coins at stake) is held from billing" in report
    status = cli("status")
    assert status.returncode == 0
    assert "1 call(s) held from billing since adoption" in status.stderr


def test_db_init_refuses_a_broken_money_row_in_one_line_and_applies_nothing(raw_api_db,
                                                                             tmp_path):
    with raw_api_db.connect() as conn:
        api = SaathiiApi(conn)
        user = api.register("c", "+9703", "customer", datetime.now(UTC))
        conn.execute("UPDATE user_wallets SET balance_coins = -20 WHERE user_id = %s", [user])
    cli = runner(raw_api_db.env(), tmp_path)

    refused = cli("db", "init")

    assert refused.returncode == 3
    assert one_error_line(refused) == (
        "saathii-workers: user_wallets: 1 row breaks balance_coins_never_negative"
        " (balance_coins >= 0): fix them, then run db init again; nothing was applied")
    with raw_api_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('job_runs') AS t").fetchone()["t"] is None
