"""The real executables, end to end: `dramatiq workers`, `periodiq workers` and the
`make run` supervisor (python -m devtools.local run), as subprocesses against the test
session's PostgreSQL and Redis.

Nothing here waits for a wall-clock minute: periodiq sends the current minute's jobs as
soon as it starts, and the boot catch-up runs as soon as a worker process boots. Every wait
polls the database, the Redis queues or the processes' logs with a deadline.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import psycopg
import pytest
import redis

import workers
from workers.engine import catch_up, cron
from workers.engine.broker import send_run
from workers.engine.jobs import LOCK_NAMESPACE
from workers.engine.runs import slot_of
from workers.schedule import JOBS

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DRAMATIQ = [str(BIN / "dramatiq"), "workers", "--processes", "1", "--threads", "2"]
PERIODIQ = [str(BIN / "periodiq"), "workers"]
SUPERVISOR = [sys.executable, "-m", "devtools.local", "run"]
TIMEZONE = ZoneInfo("Asia/Kolkata")  # APP_TIMEZONE of the test session (tests/conftest.py)

#: Longest wait for anything to happen (seconds); a ceiling, not an expected duration.
DEADLINE = 45
POLL = 0.2
#: How long a process gets to exit after SIGTERM before it is SIGKILLed (seconds).
STOP_WAIT = 30

#: periodiq's log line for each message it sends: "Scheduling Actor(<name>) at <time>."
SCHEDULING = re.compile(r"Scheduling Actor\((\w+)\) at (.+)\.$", re.M)
#: The run log's line for each message handled: "<job> <local slot> <status> ...", at
#: DEBUG for duplicates and idle runs (the services run at LOG_LEVEL=DEBUG for them).
OUTCOME = re.compile(r"\[workers\.runs\] \[(?:INFO|DEBUG)\] (\w+)"
                     r" (\d{4}-\d\d-\d\d \d\d:\d\d[+-]\d\d:\d\d) (\w+)", re.M)

RUNS = """SELECT job, scheduled_for, status, attempt, trigger FROM job_runs
          WHERE job = %(job)s ORDER BY scheduled_for"""
SUCCEEDED = """SELECT job, scheduled_for, status, attempt, trigger FROM job_runs
               WHERE job = %(job)s AND status = 'succeeded' ORDER BY scheduled_for LIMIT 1"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, path: str = "/metrics") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.read().decode()
    except OSError:  # not listening yet
        return ""


def admin_get(port: int, path: str, token: str) -> str:
    """The admin's answer to a GET with a bearer token; "" while it does not listen."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read().decode()
    except OSError:
        return ""


class Service:
    """One started executable: its Popen (leader of its own session) and its output file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name, self.argv, self.log = name, argv, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        text = "\n".join(self.output().splitlines()[-lines:])
        return f"----- {self.name} (pid {self.pid}, exit {self.popen.poll()}): " \
               f"{' '.join(self.argv)}\n{text}\n"

    def members(self) -> list[int]:
        """Live processes of its session (it, its children and theirs), zombies excluded."""
        return session_members(self.pid)

    def terminate(self) -> None:
        """SIGTERM to the leader, up to STOP_WAIT for it; then SIGKILL whatever is left of
        its session (the leader or orphaned children)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while (left := self.members()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def session_members(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose session id is `sid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces and parentheses.
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


class Services:
    """The processes a test started; all of them are stopped when the test ends."""

    def __init__(self, db, directory: Path):
        self.db, self.directory = db, directory
        self.started: list[Service] = []

    def start(self, name: str, argv: list[str], **env: str) -> Service:
        """Start `argv` with the test database's environment plus `env`. No boot catch-up
        unless asked for: its runs would mingle with the scheduled ones. DEBUG logs: the
        outcome of every run, duplicates and idle ones included."""
        log = self.directory / f"{name}-{len(self.started)}.log"
        env = {"PYTHONUNBUFFERED": "1", "CATCH_UP_ON_BOOT": "false", "LOG_LEVEL": "DEBUG",
               **env}
        service = Service(name, argv, self.db.env(**env), log)
        self.started.append(service)
        return service

    def tails(self) -> str:
        return "".join(service.tail() for service in self.started)

    def wait_for(self, what: str, condition, *, alive: tuple[Service, ...] = (),
                 timeout: float = DEADLINE):
        """Poll `condition` until it returns something truthy, and return that. Fails with
        the processes' output on timeout, or as soon as one of `alive` has exited."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            for service in alive:
                if service.popen.poll() is not None:
                    pytest.fail(f"{service.name} exited ({service.popen.returncode}) while "
                                f"waiting for {what}\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout} s\n{self.tails()}")
            time.sleep(POLL)

    def stop_all(self) -> None:
        for service in self.started:
            service.terminate()


@pytest.fixture
def services(db, tmp_path):
    started = Services(db, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
        # Shown by pytest only when the test failed ("Captured stdout teardown").
        print(started.tails())


def fetch(conn, sql: str, **params) -> list[dict]:
    return conn.execute(sql, params).fetchall()


def outcomes(text: str) -> list[tuple[str, datetime, str]]:
    """(job, slot, status) of every message a worker's log says its actor handled."""
    return [(job, datetime.fromisoformat(slot), status)
            for job, slot, status in OUTCOME.findall(text)]


def scheduled(text: str) -> list[tuple[str, datetime]]:
    """(job, slot) of every message a periodiq log says it sent."""
    return [(job, slot_of(datetime.fromisoformat(at))) for job, at in SCHEDULING.findall(text)]


def queues_drained(redis_url: str, *queues: str) -> bool:
    """No message waiting in, or delivered and not yet acknowledged from, `queues`."""
    with redis.Redis.from_url(redis_url) as client:
        return all(client.llen(f"dramatiq:{queue}") == 0
                   and client.hlen(f"dramatiq:{queue}.msgs") == 0 for queue in queues)


def test_scheduler_and_workers_run_the_minute_jobs(db, services):
    worker = services.start("dramatiq", DRAMATIQ)
    scheduler = services.start("periodiq", PERIODIQ)

    with db.connect() as conn:
        row = services.wait_for(
            "succeeded coin_deduction run",
            lambda: conn.execute(SUCCEEDED, {"job": "coin_deduction"}).fetchone(),
            alive=(worker, scheduler))

    assert row["scheduled_for"] == row["scheduled_for"].replace(second=0, microsecond=0)
    assert row["trigger"] == "schedule"
    assert row["attempt"] == 1


def test_two_schedulers_send_every_slot_twice_and_it_runs_once(db, services):
    worker = services.start("dramatiq", DRAMATIQ)
    schedulers = [services.start("periodiq", PERIODIQ) for _ in range(2)]
    minute_jobs = ("coin_deduction", "catch_up")

    def every_sent_message_handled():
        # The worker's log first: whatever it handled was sent (logged) before, so it is in
        # the schedulers' logs read next.
        handled = outcomes(worker.output())
        sent = [scheduled(scheduler.output()) for scheduler in schedulers]
        both = set.intersection(*({slot for job, slot in s if job == "coin_deduction"}
                                  for s in sent))
        if not both:  # no slot sent by both yet
            return None
        sends = Counter(message for s in sent for message in s if message[0] in minute_jobs)
        if Counter((job, slot) for job, slot, _ in handled if job in minute_jobs) != sends:
            return None
        return sends, handled

    sends, handled = services.wait_for("handling of every message of both schedulers",
                                       every_sent_message_handled,
                                       alive=(worker, *schedulers))
    # The catch-up of a fresh database enqueues badge_assignment and log_rotation.
    services.wait_for("empty queues", lambda: queues_drained(
        db.redis_url, "default", "billing", "maintenance"), alive=(worker,))
    with db.connect() as conn:
        rows = {(row["job"], row["scheduled_for"]): row
                for row in fetch(conn, "SELECT * FROM job_runs")}

    # Per slot: sent twice unless the schedulers started on either side of a minute
    # boundary. Whatever the count, it ran once; the other message was a no-op.
    statuses = defaultdict(list)
    for job, slot, status in handled:
        statuses[job, slot].append(status)
    for (job, slot), count in sends.items():
        assert sorted(statuses[job, slot]) == ["duplicate"] * (count - 1) + ["succeeded"], \
            (job, slot, count)
        row = rows[job, slot]
        assert (row["status"], row["attempt"], row["trigger"]) == ("succeeded", 1, "schedule")
    assert 2 in {count for (job, _), count in sends.items() if job == "coin_deduction"}
    for job in ("badge_assignment", "log_rotation"):
        ran = [row for (name, _), row in rows.items() if name == job]
        assert [(r["status"], r["attempt"]) for r in ran] == [("succeeded", 1)], job


def test_worker_boot_catches_up_the_missed_daily_slot(db, services):
    daily = ("badge_assignment", "log_rotation")
    worker = services.start("dramatiq", DRAMATIQ, CATCH_UP_ON_BOOT="true")

    with db.connect() as conn:
        def caught_up():
            runs = {job: fetch(conn, RUNS, job=job) for job in ("catch_up", *daily)}
            if all(any(r["status"] == "succeeded" for r in rows) for rows in runs.values()):
                return runs
            return None

        runs = services.wait_for("boot catch-up and the runs it asked for", caught_up,
                                 alive=(worker,))
        [boot] = runs["catch_up"]
        assert (boot["status"], boot["trigger"]) == ("succeeded", "enqueued")
        # The catch-up looked back from its own slot: the minute the worker booted.
        expected = {job: latest_slot(job, boot["scheduled_for"]) for job in daily}
        for job in daily:
            assert [(r["scheduled_for"], r["status"], r["attempt"], r["trigger"])
                    for r in runs[job]] == [(expected[job], "succeeded", 1, "enqueued")], job

        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(timeout=STOP_WAIT) == 0, worker.tail()
        again = services.start("dramatiq", DRAMATIQ, CATCH_UP_ON_BOOT="true")
        # Its boot catch-up is a duplicate of the first one (same minute) or runs for a new
        # minute and finds nothing missed: either way its outcome is logged.
        [(_, slot, status)] = services.wait_for(
            "second boot's catch-up",
            lambda: [o for o in outcomes(again.output()) if o[0] == "catch_up"], alive=(again,))
        services.wait_for("empty queues", lambda: queues_drained(
            db.redis_url, "default", "maintenance"), alive=(again,))
        assert status in ("succeeded", "duplicate"), again.tail()
        for job in daily:  # the caught-up slot did not run again
            assert [r for r in fetch(conn, RUNS, job=job)
                    if r["scheduled_for"] == expected[job]] == runs[job], job
            if job == "log_rotation" and latest_slot(job, slot) == expected[job]:
                assert fetch(conn, RUNS, job=job) == runs[job], job  # (unless a new slot
                # just went by; badge_assignment backfills its older days, one a run)
        if status == "succeeded":
            [second] = fetch(conn, "SELECT result FROM job_runs WHERE job = 'catch_up'"
                                   " AND scheduled_for = %(slot)s", slot=slot)
            missed = [(item["job"], item["scheduled_for"])
                      for item in second["result"]["missed"]]
            assert [(job, when) for job, when in missed
                    if when == expected[job].isoformat()] == []


def latest_slot(job: str, now: datetime) -> datetime:
    """The slot of `job` the catch-up at `now` considers."""
    return cron.latest_at_or_before(JOBS[job].cron, TIMEZONE, now - catch_up.GRACE)


def test_make_run_supervisor_starts_and_stops_everything(db, services):
    port, admin_port, data = free_port(), free_port(), services.directory / "data"
    supervisor = services.start("make-run", SUPERVISOR, WORKER_PROCESSES="1", WORKER_THREADS="2",
                                METRICS_PORT=str(port), ADMIN_PORT=str(admin_port),
                                DATA_DIR=str(data))

    with db.connect() as conn:
        services.wait_for(
            "succeeded coin_deduction run",
            lambda: conn.execute(SUCCEEDED, {"job": "coin_deduction"}).fetchone(),
            alive=(supervisor,))
    children = [psutil.Process(pid) for pid in supervisor.members() if pid != supervisor.pid]
    names = " ".join(" ".join(child.cmdline()) for child in children)
    assert "dramatiq" in names and "periodiq" in names and "workers metrics" in names, names
    assert "workers admin" in names, names
    assert "saathii_job_runs_total" in services.wait_for(
        "its metrics served", lambda: scrape(port), alive=(supervisor,))
    assert f"metrics (http://127.0.0.1:{port}/metrics)" in supervisor.output()
    # The admin, with the token make run made (owner-only) and printed.
    token_file = data / "admin-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert f"with the token in {token_file}: {token}" in supervisor.output()
    jobs = services.wait_for("the admin answering", lambda: admin_get(
        admin_port, "/api/jobs", token), alive=(supervisor,))
    assert [job["name"] for job in json.loads(jobs)["items"]][0] == "coin_deduction"

    os.killpg(supervisor.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        code = supervisor.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the supervisor did not exit within 60 s of Ctrl-C\n{services.tails()}")
    assert code == 0, supervisor.tail()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert supervisor.members() == []


@contextmanager
def table_locked(db, table: str):
    """Hold an ACCESS EXCLUSIVE lock on `table` until the block ends (or `release()`):
    a job reading it blocks inside its run, in the middle of its work."""
    conn = psycopg.connect(db.url)
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn.rollback
    finally:
        conn.close()


def blocked_on_lock(conn, job: str = "coin_deduction") -> bool:
    """Whether a run of `job` (the session holding its advisory lock) waits for a lock. Not
    any waiting session: with a scheduler running, call_cleanup at a ten-minute boundary
    waits on the same table lock while the test's message is still queued."""
    return conn.execute(
        "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
        " WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'"
        " AND l.locktype = 'advisory' AND l.granted"
        " AND (l.classid, l.objid, l.objsubid) = (%(namespace)s, %(lock_id)s, 2)",
        {"namespace": LOCK_NAMESPACE, "lock_id": JOBS[job].lock_id}).fetchone()["n"] > 0


def test_sigterm_lets_a_worker_finish_and_exit_cleanly(db, services):
    """What `docker stop` does (tini forwards SIGTERM to dramatiq's main process): the run
    in progress finishes and commits, then the worker exits 0."""
    slot = slot_of(datetime.now(UTC))
    with db.connect() as conn, table_locked(db, "user_calls") as release:
        worker = services.start("dramatiq", DRAMATIQ, DB_LOCK_TIMEOUT_MS="60000")
        send_run(workers.broker, "coin_deduction", slot)
        services.wait_for("coin_deduction blocked in its work",
                          lambda: blocked_on_lock(conn), alive=(worker,))

        worker.popen.send_signal(signal.SIGTERM)
        services.wait_for("worker stopping", lambda: "Stopping worker process" in
                          worker.output(), alive=(worker,))
        release()
        try:
            code = worker.popen.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {STOP_WAIT} s after SIGTERM\n{worker.tail()}")
        assert code == 0, worker.tail()
        assert [(r["scheduled_for"], r["status"], r["attempt"])
                for r in fetch(conn, RUNS, job="coin_deduction")] == [(slot, "succeeded", 1)]
    assert "Killing worker process" not in worker.output()
    assert worker.members() == []


def test_make_run_ctrl_c_lets_the_run_in_progress_finish(db, services):
    # Threads enough for the test's run beside every scheduled job that may block on the
    # same table lock (call_cleanup, presence_cleanup, the catch-up's badge_assignment and
    # log_rotation when the scheduler starts at a ten-minute boundary).
    supervisor = services.start("make-run", SUPERVISOR, WORKER_PROCESSES="1",
                                WORKER_THREADS="8", DB_LOCK_TIMEOUT_MS="60000",
                                METRICS_PORT=str(free_port()), ADMIN_PORT=str(free_port()),
                                DATA_DIR=str(services.directory / "data"))
    forwarded = "[dramatiq.MainProcess] [INFO] Sending signal"
    with db.connect() as conn:
        # Up and running (its `db init` is done: it would wait for the table lock).
        first = services.wait_for(
            "succeeded coin_deduction run",
            lambda: conn.execute(SUCCEEDED, {"job": "coin_deduction"}).fetchone(),
            alive=(supervisor,))
        slot = first["scheduled_for"] - timedelta(minutes=5)
        with table_locked(db, "user_calls") as release:
            send_run(workers.broker, "coin_deduction", slot)
            services.wait_for("coin_deduction blocked in its work",
                              lambda: blocked_on_lock(conn), alive=(supervisor,))

            os.killpg(supervisor.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            services.wait_for("worker stopping", lambda: "Stopping worker process" in
                              supervisor.output(), alive=(supervisor,))
            # Give a second signal the time to arrive (today it does within a second), and
            # its effect the time to show; no failure when none comes.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "Killing worker process" not in \
                    supervisor.output() and supervisor.output().count(forwarded) < 2:
                time.sleep(POLL)
            time.sleep(POLL)
            release()
            try:
                code = supervisor.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"supervisor still running 60 s after Ctrl-C\n{supervisor.tail()}")
        assert code == 0, supervisor.tail()
        runs = [(r["status"], r["attempt"]) for r in fetch(conn, RUNS, job="coin_deduction")
                if r["scheduled_for"] == slot]
    output = supervisor.output()
    assert (runs, "Killing worker process" in output, output.count(forwarded)) \
        == ([("succeeded", 1)], False, 1), supervisor.tail()
