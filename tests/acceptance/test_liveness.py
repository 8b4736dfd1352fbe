"""Liveness and health with the real executables: heartbeats of `dramatiq workers` and
`periodiq workers` in PostgreSQL, what `python -m workers health` and the metrics server
(`python -m workers metrics`, and Dramatiq's own middleware) say when one dies and when it
is back, and the compose healthcheck's own command.

Beats are fast here (PROCESS_BEAT_SECONDS=1, stale after 5 s) so that a death is seen in
seconds; which slots are overdue is asked of health at an explicit logical time rather
than by waiting for a minute to pass.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from test_processes import (  # noqa: F401
    DRAMATIQ,
    PERIODIQ,
    STOP_WAIT,
    free_port,
    scrape,
    services,
)

from workers.engine import cron
from workers.observability import health, metrics
from workers.schedule import JOBS
from workers.settings import Settings

pytestmark = pytest.mark.acceptance

FAST = {"PROCESS_BEAT_SECONDS": "1", "PROCESS_STALE_SECONDS": "5"}
PROCESSES = "SELECT kind, pid, queues, threads, running FROM job_processes ORDER BY kind, pid"


def workers_cli(db, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers", *args], env=db.env(**FAST),
                          capture_output=True, text=True, timeout=60)


def sample(text: str, line_start: str) -> float | None:
    """The value of the sample whose line starts with `line_start` (name and labels)."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def checks(result: subprocess.CompletedProcess) -> dict[str, dict]:
    return {check["check"]: check for check in json.loads(result.stdout)["checks"]}


#: Checks of the machine, not of the system: a busy test machine may warn of its load.
MACHINE = ("load", "memory")


def healthy(db) -> subprocess.CompletedProcess | None:
    """health --json, when every check of the system in it is ok."""
    result = workers_cli(db, "health", "--json")
    not_ok = [c for name, c in checks(result).items()
              if name not in MACHINE and c["verdict"] != "ok"]
    print("not ok:", not_ok)  # the last of these is shown when the wait fails
    return None if not_ok else result


def settle_every_slot(db) -> None:
    """Run each job for its latest slot, as an operator's run-task would: so that nothing
    is overdue from before the test's processes started."""
    now, timezone = datetime.now(UTC), Settings().timezone
    for job in JOBS.values():  # the latest slot, and the latest past its grace
        for slot in {cron.latest_at_or_before(job.cron, timezone, at)
                     for at in (now, now - job.grace)}:
            done = workers_cli(db, "run-task", job.name, "--as-of", slot.isoformat())
            assert done.returncode == 0, done.stderr


def test_a_killed_worker_fails_health_and_its_restart_heals_it(db, services):  # noqa: F811
    settle_every_slot(db)
    worker = services.start("dramatiq", DRAMATIQ, **FAST)
    scheduler = services.start("periodiq", PERIODIQ, **FAST)
    port = free_port()
    exporter = services.start("metrics", [sys.executable, "-m", "workers", "metrics"],
                              METRICS_PORT=str(port), **FAST)

    with db.connect() as conn:
        beating = services.wait_for(
            "a worker's and the scheduler's heartbeats",
            lambda: (rows := conn.execute(PROCESSES).fetchall())
            and {row["kind"] for row in rows} == {"worker", "scheduler"} and rows,
            alive=(worker, scheduler))
    [scheduler_row, worker_row] = beating
    assert set(worker_row["queues"]) == {job.queue for job in JOBS.values()}
    assert worker_row["threads"] == 2
    assert workers_cli(db, "health", "--process", "worker").returncode == 0
    assert workers_cli(db, "health", "--process", "scheduler").returncode == 0
    first = services.wait_for(  # the first minute's runs are done: nothing overdue
        "every check ok", lambda: healthy(db), alive=(worker, scheduler))
    assert checks(first)["schedulers"]["figure"] == 1
    served = services.wait_for("a scrape", lambda: scrape(port), alive=(exporter,))
    assert (sample(served, 'saathii_processes_alive{kind="worker"}'),
            sample(served, 'saathii_processes_alive{kind="scheduler"}')) == (1, 1)

    [child] = [pid for pid in worker.members() if pid != worker.pid]
    assert worker_row["pid"] == child  # the worker process beats, not dramatiq's parent
    for pid in (worker.pid, child):  # no clean exit: its row stays, and goes stale
        os.kill(pid, signal.SIGKILL)
    worker.popen.wait(timeout=STOP_WAIT)

    failing = services.wait_for(
        "health exiting 2", lambda: (r := workers_cli(db, "health", "--json")).returncode == 2
        and r, timeout=30)
    found = checks(failing)
    assert found["workers:billing"]["verdict"] == "fail"
    assert f"dead: worker {socket.gethostname()}:{child} last beat" in \
        found["workers:billing"]["detail"]  # the dead worker, named
    assert workers_cli(db, "health", "--process", "worker").returncode == 2
    assert workers_cli(db, "health", "--process", "scheduler").returncode == 0
    assert sample(scrape(port), 'saathii_processes_alive{kind="worker"}') == 0

    # Two minutes on, the minutes nobody ran are overdue (the scheduler still sends them).
    settings = Settings(_env_file=None, database_url=db.url, redis_url=db.redis_url,
                        process_beat_seconds=1, process_stale_seconds=5)
    later_now = datetime.now(UTC) + timedelta(minutes=2)
    later = health.check_all(settings, JOBS.values(), later_now)
    overdue = {c.name: c for c in later.checks}["job:coin_deduction"]
    assert (overdue.verdict, overdue.figure) == (health.Verdict.FAIL, "overdue")
    assert later.exit_code == 2
    assert sample(metrics.render(settings, JOBS.values(), later_now),
                  'saathii_job_overdue{job="coin_deduction"}') == 1

    # Back, with Dramatiq's own Prometheus middleware, served by the worker's parent.
    dramatiq_port = free_port()
    again = services.start("dramatiq", DRAMATIQ, **FAST, DRAMATIQ_PROMETHEUS="true",
                           dramatiq_prom_host="127.0.0.1", dramatiq_prom_port=str(dramatiq_port),
                           dramatiq_prom_db=str(services.directory / "dramatiq-prometheus"))
    services.wait_for("every check ok again", lambda: healthy(db), alive=(again, scheduler))
    assert workers_cli(db, "health", "--process", "worker").returncode == 0
    assert sample(scrape(port), 'saathii_processes_alive{kind="worker"}') == 1
    # A message of our own, rather than waiting for the next minute's scheduled one.
    sent = workers_cli(db, "run-task", "presence_cleanup", "--as-of", "2026-01-01T00:00Z",
                       "--enqueue")
    assert sent.returncode == 0, sent.stderr
    counted = services.wait_for(
        "Dramatiq's message counters", lambda: sample(scrape(dramatiq_port, "/"), (
            'dramatiq_messages_total{actor_name="presence_cleanup",queue_name="default"}')),
        alive=(again,))
    assert counted >= 1


def test_a_clean_exit_removes_the_heartbeat_and_two_schedulers_warn(db, services):  # noqa: F811
    first = services.start("periodiq", PERIODIQ, **FAST)
    second = services.start("periodiq", PERIODIQ, **FAST)
    with db.connect() as conn:
        services.wait_for("two schedulers beating", lambda: len(
            conn.execute("SELECT 1 FROM job_processes WHERE kind = 'scheduler'").fetchall())
            == 2, alive=(first, second))
        result = workers_cli(db, "health", "--json")
        assert checks(result)["schedulers"]["verdict"] == "warn"
        assert checks(result)["schedulers"]["figure"] == 2

        for scheduler in (first, second):  # SIGTERM, as compose and make run stop it
            scheduler.popen.send_signal(signal.SIGTERM)
            assert scheduler.popen.wait(timeout=STOP_WAIT) == 0, scheduler.tail()
        assert conn.execute(PROCESSES).fetchall() == []
    result = workers_cli(db, "health", "--json")
    assert result.returncode == 2
    assert checks(result)["schedulers"]["detail"].startswith("no live scheduler")
