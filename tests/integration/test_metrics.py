"""The Prometheus metrics, read from a real PostgreSQL and Redis at scrape time: the runs'
counters kept by the database as attempts end (and kept when their rows are deleted), the
figures of the billing, the jobs' states at an explicit logical time, the queues, and a
scrape that still answers when a server is down."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import raising_job
from ledger import add_user, start_call
from prometheus_client.parser import text_string_to_metric_families

import workers
from workers.engine import controls, runtime
from workers.engine.broker import send_run
from workers.engine.runs import Status, run_job
from workers.observability import metrics
from workers.schedule import JOBS

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def settings(db):
    return runtime.current().settings.model_copy(update={"redis_url": db.redis_url})


def scrape(db, now: datetime, **changes) -> dict:
    """One scrape, as {(sample name, ((label, value), ...)): value}."""
    text = metrics.render(settings(db).model_copy(update=changes), JOBS.values(), now)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def run(conn, job, slot: datetime) -> Status:
    return run_job(conn, job, slot, runtime.current().run_options()).status


def test_ended_attempts_are_counted_by_the_database_and_outlive_their_rows(db, conn):
    caller = add_user(conn, coins=1000, seen=T0 + timedelta(days=1))
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    start_call(conn, caller, listener, T0)
    billing = JOBS["coin_deduction"]
    assert run(conn, billing, T0 + MINUTE) is Status.SUCCEEDED  # minute 2
    assert run(conn, billing, T0 + 3 * MINUTE) is Status.SUCCEEDED  # minutes 3 and 4
    assert run(conn, billing, T0 + 3 * MINUTE) is Status.DUPLICATE  # no attempt: not counted
    assert run(conn, raising_job.JOB, T0) is Status.FAILED
    # A worker died running the next slot: the next claim finds it abandoned, then runs it.
    conn.execute("INSERT INTO job_runs (job, scheduled_for, status, backend_pid, deadline)"
                 " VALUES ('coin_deduction', %s, 'running', 0, now() + interval '1 h')",
                 [T0 + 4 * MINUTE])
    assert run(conn, billing, T0 + 4 * MINUTE) is Status.SUCCEEDED  # minute 5

    found = scrape(db, T0 + 4 * MINUTE)
    runs = {status: found["saathii_job_runs_total", (("job", "coin_deduction"),
                                                      ("status", status))]
            for status in metrics.ENDED}
    assert runs == {"succeeded": 3, "failed": 0, "skipped": 0, "abandoned": 1}
    assert found["saathii_job_runs_total", (("job", "raising_test_job"),
                                            ("status", "failed"))] == 1
    timed = (("job", "coin_deduction"),)
    assert found["saathii_job_run_duration_seconds_count", timed] == 3  # not the abandoned
    assert found["saathii_job_run_duration_seconds_bucket", (*timed, ("le", "+Inf"))] == 3
    assert 0 < found["saathii_job_run_duration_seconds_sum", timed] < 60
    assert found["saathii_job_figure_total", (("figure", "minutes_charged"),
                                              ("job", "coin_deduction"))] == 4
    assert found["saathii_coins_charged_total", ()] == 40
    assert found["saathii_job_last_success_timestamp_seconds", timed] > T0.timestamp()
    assert found["saathii_ongoing_calls", (("call_type", "audio"),)] == 1

    conn.execute("DELETE FROM job_runs")  # as retention does, in time
    again = scrape(db, T0 + 4 * MINUTE)
    assert again["saathii_job_runs_total", (("job", "coin_deduction"),
                                            ("status", "succeeded"))] == 3
    assert again["saathii_coins_charged_total", ()] == 40


def test_a_scrape_shows_overdue_paused_and_dead_jobs_and_the_queues(db, conn):
    controls.set_paused(conn, JOBS["call_cleanup"], True)
    conn.execute("INSERT INTO job_processes (process_id, kind, host, pid, version, started_at,"
                 " beat_at, queues, threads) VALUES (%s, 'worker', 'h', 1, 'test', now(),"
                 " now() - interval '10 minutes', '{billing}', 2)", [uuid.uuid4()])
    send_run(workers.broker, "coin_deduction", T0)  # waiting: no worker runs here
    now = T0 + timedelta(seconds=90)  # the slot due (past its minute's grace): T0

    found = scrape(db, now)

    assert found["saathii_job_overdue", (("job", "coin_deduction"),)] == 1  # nothing ran
    assert found["saathii_job_paused", (("job", "call_cleanup"),)] == 1
    assert found["saathii_job_overdue", (("job", "call_cleanup"),)] == 0  # paused, not overdue
    assert found["saathii_processes_alive", (("kind", "worker"),)] == 0  # its beat is stale
    assert found["saathii_processes_alive", (("kind", "scheduler"),)] == 0
    assert found["saathii_queue_depth", (("queue", "billing"),)] == 1
    assert found["saathii_dead_letters", (("queue", "billing"),)] == 0
    assert (found["saathii_database_up", ()], found["saathii_redis_up", ()]) == (1, 1)

    assert run(conn, JOBS["coin_deduction"], T0) is Status.SUCCEEDED
    later = scrape(db, now)
    assert later["saathii_job_overdue", (("job", "coin_deduction"),)] == 0
    started = conn.execute("SELECT started_at FROM job_runs").fetchone()["started_at"]
    assert later["saathii_job_lag_seconds", (("job", "coin_deduction"),)] == pytest.approx(
        (started - T0).total_seconds())  # it ran (for a logical T0) days after T0


def test_a_server_that_is_down_is_a_gauge_at_zero_and_the_rest_is_served(db):
    down_redis = "redis://127.0.0.1:1/0"
    found = scrape(db, datetime.now(UTC), redis_url=down_redis)
    assert found["saathii_redis_up", ()] == 0
    assert found["saathii_database_up", ()] == 1
    assert ("saathii_queue_depth", (("queue", "billing"),)) not in found

    found = scrape(db, datetime.now(UTC),
                   database_url="postgresql://nobody@127.0.0.1:1/none")
    assert (found["saathii_database_up", ()], found["saathii_redis_up", ()]) == (0, 1)


@pytest.mark.parametrize("path, status", [("/metrics", 200), ("/", 404)])
def test_only_metrics_is_served(db, path, status):
    app = metrics.only_metrics(
        metrics.make_wsgi_app(metrics.registry(settings(db), JOBS.values())))
    answered = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
                        lambda code, headers: answered.append(code)))
    assert answered[0].startswith(str(status))
    assert (b"saathii_database_up 1.0" in body) is (status == 200)


def test_the_alert_rules_and_the_dashboard_ask_only_for_series_a_scrape_has(db):
    """Every saathii_* name in docker/alerts.yml and docker/grafana-dashboard.json is a
    series of a real scrape (a renamed metric would silence its alert)."""
    text = metrics.render(settings(db), JOBS.values(), datetime.now(UTC))
    suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    served = {name + suffix  # every family, with or without samples on a fresh database
              for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, re.M)
              for suffix in suffixes[kind]}
    docker = Path(__file__).resolve().parents[2] / "docker"
    for path in (docker / "alerts.yml", docker / "grafana-dashboard.json"):
        asked = set(re.findall(r"\bsaathii_\w+", path.read_text())) - {"saathii_workers"}
        assert asked and asked <= served, (path.name, asked - served)
