"""Sentry alerting against a real local stand-in for Sentry's ingest endpoint, from real
`dramatiq workers` processes: each failed attempt of a run is one event, grouped by job;
nothing personal (message arguments, local variables) leaves."""

import gzip
import json
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest.mock import patch

import dramatiq
import psycopg
import pytest

import workers
from workers.schedule import JOBS

with patch.dict(JOBS):  # its row is for the worker process: this one's table stays as is
    from raising_job import JOB as RAISING
    from raising_job import SECRET

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRAMATIQ = [str(Path(sys.executable).parent / "dramatiq"), "workers"]
ONE_THREAD = ["--processes", "1", "--threads", "1"]
#: Longest wait for anything to happen (seconds); a ceiling, not an expected duration.
DEADLINE = 60

#: One run near its (shortened) time limit, as the CLI runs it: booted, so that its hooks
#: have the Sentry subscriber.
SLOW_RUN = """
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from workers.engine.boot import boot
from workers.engine.db import connect
from workers.engine.runs import run_job
from workers.schedule import JOBS
import sentry_sdk

runtime = boot("cli")
job = replace(JOBS["coin_deduction"], time_limit=timedelta(milliseconds=400))
with connect(runtime.settings.database_url, autocommit=True) as conn:
    work = lambda conn, run: conn.execute("SELECT pg_sleep(0.25)") and {}
    print(run_job(conn, job, datetime.now(UTC), runtime.run_options(), work=work).status)
sentry_sdk.flush(10)
"""

#: Two health_check runs five minutes apart with nothing running, as the CLI runs them.
TWO_HEALTH_CHECKS = """
from datetime import UTC, datetime, timedelta
from workers.engine.boot import boot
from workers.engine.db import connect
from workers.engine.runs import run_job
from workers.schedule import JOBS
import sentry_sdk

runtime = boot("cli")
first = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
with connect(runtime.settings.database_url, autocommit=True) as conn:
    for slot in (first, first + timedelta(minutes=5)):
        print(run_job(conn, JOBS["health_check"], slot, runtime.run_options()).status)
sentry_sdk.flush(10)
"""

#: Runs of each kind a cron monitor must tell apart, as the CLI runs them: one that
#: succeeds, its duplicate, one that fails, one locked out, one paused.
RUNS_FOR_CRONS = f"""
import sys
from datetime import UTC, datetime, timedelta
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from workers.engine.boot import boot
from workers.engine import controls
from workers.engine.db import connect
from workers.engine.jobs import LOCK_NAMESPACE
from workers.engine.runs import run_job
from workers.schedule import JOBS
import raising_job
import sentry_sdk

runtime = boot("cli")
slot = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
options = runtime.run_options()
url = runtime.settings.database_url
with connect(url, autocommit=True) as conn, connect(url, autocommit=True) as other:
    print(run_job(conn, JOBS["coin_deduction"], slot, options).status)
    print(run_job(conn, JOBS["coin_deduction"], slot, options).status)
    print(run_job(conn, raising_job.JOB, slot, options).status)
    other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, JOBS["call_cleanup"].lock_id])
    print(run_job(conn, JOBS["call_cleanup"], slot, options).status)
    controls.set_paused(conn, JOBS["presence_cleanup"], True)
    print(run_job(conn, JOBS["presence_cleanup"], slot, options).status)
sentry_sdk.flush(10)
"""


class Ingest(BaseHTTPRequestHandler):
    envelopes: list[bytes] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding:
            raise AssertionError(f"unexpected encoding {encoding}")
        Ingest.envelopes.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry():
    Ingest.envelopes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def schemaless_url(db):
    """A database without the schema: every run fails in its first statement."""
    name = "noschema_" + db.url.rsplit("/", 1)[1]
    with psycopg.connect(db.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    yield db.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(db.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def items(envelopes: list[bytes], kind: str) -> list[dict]:
    """The payloads of the envelopes' items of type `kind` (event, check_in)."""
    found = []
    for envelope in envelopes:
        lines = envelope.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == kind:
                found.append(json.loads(payload))
    return found


def events(envelopes: list[bytes]) -> list[dict]:
    return items(envelopes, "event")


def send(actor_name: str, queue: str, argument: str) -> None:
    """A message for `actor_name`, as any producer would enqueue it."""
    workers.broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor_name, args=(),
                                            kwargs={"scheduled_for": argument}, options={}))


def wait_for(what: str, condition, worker: subprocess.Popen, log: Path):
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what}; worker exit {worker.poll()}\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    return value


def stop(worker: subprocess.Popen) -> None:
    """SIGTERM: the worker finishes, and Sentry's client flushes what it holds at exit."""
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def attempts(url: str, job: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT attempt, status FROM job_runs WHERE job = %s",
                           [job]).fetchone()
    return row[0] if row and row[1] == "failed" else 0


def assert_nothing_personal(envelopes: list[bytes], argument: str) -> None:
    sent = b"".join(envelopes).decode()
    assert argument not in sent, "the message's arguments must not leave"
    assert SECRET not in sent, "local variables must not leave"
    for event in events(envelopes):
        message = event.get("contexts", {}).get("dramatiq", {}).get("data", {})
        assert "kwargs" not in message and "args" not in message
        for value in event.get("exception", {}).get("values", []):
            for frame in value.get("stacktrace", {}).get("frames", []):
                assert "vars" not in frame, "local variables must not leave"


def test_each_failed_attempt_is_one_event_and_a_jobs_failures_one_issue(db, sentry, tmp_path):
    log = tmp_path / "dramatiq.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([*DRAMATIQ, "raising_job", *ONE_THREAD, "--path", str(HERE)],
                                  cwd=ROOT,
                                  env=db.env(SENTRY_DSN=sentry), stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        argument = datetime.now(UTC).isoformat()  # never a whole minute: not its slot
        send(RAISING.name, RAISING.queue, argument)
        attempted = 1 + RAISING.max_retries
        wait_for(f"{attempted} failed attempts",
                 lambda: attempts(db.url, RAISING.name) == attempted, worker, log)
        wait_for(f"{attempted} events", lambda: len(events(Ingest.envelopes)) >= attempted,
                 worker, log)
    finally:
        stop(worker)

    found = events(Ingest.envelopes)
    assert len(found) == attempted, [event.get("message") or event["exception"]["values"][-1]
                                     for event in found]
    assert {tuple(event["fingerprint"]) for event in found} == {
        ("saathii-workers", "run-failed", RAISING.name)}
    assert sorted(event["exception"]["values"][-1]["value"] for event in found) == [
        f"boom on attempt {n}" for n in range(1, attempted + 1)]
    assert all(event["tags"]["job"] == RAISING.name and event["level"] == "error"
               for event in found)
    assert_nothing_personal(Ingest.envelopes, argument)


def test_a_failure_outside_the_run_contract_is_reported_once(db, sentry, schemaless_url,
                                                             tmp_path):
    log = tmp_path / "dramatiq.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([*DRAMATIQ, *ONE_THREAD], cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT,
                                  env=db.env(SENTRY_DSN=sentry, DATABASE_URL=schemaless_url))
    try:
        argument = datetime.now(UTC).isoformat()
        send("presence_cleanup", "default", argument)  # no schema: refused before its claim
        wait_for("an event", lambda: events(Ingest.envelopes), worker, log)
        wait_for("the message dead-lettered", lambda: "Retries exceeded" in log.read_text(),
                 worker, log)
    finally:
        stop(worker)

    [event] = events(Ingest.envelopes)
    assert event["exception"]["values"][-1]["type"] == "SchemaMissing"
    assert event["contexts"]["dramatiq"]["data"]["actor_name"] == "presence_cleanup"
    assert_nothing_personal(Ingest.envelopes, argument)


def test_a_run_near_its_time_limit_is_reported_as_a_warning(db, sentry):
    done = subprocess.run([sys.executable, "-c", SLOW_RUN], capture_output=True, text=True,
                          timeout=90, env=db.env(SENTRY_DSN=sentry))
    assert (done.returncode, done.stdout.strip()) == (0, "succeeded"), done.stderr[-3000:]

    [event] = events(Ingest.envelopes)
    assert event["level"] == "warning"
    assert event["fingerprint"] == ["saathii-workers", "near-limit", "coin_deduction"]
    assert event["message"].endswith(
        "of its 0.4 s time limit. Split billing further: raise BILLING_SHARDS.")


def test_a_health_check_turning_failing_is_one_message_not_one_per_run(db, sentry):
    done = subprocess.run([sys.executable, "-c", TWO_HEALTH_CHECKS], capture_output=True,
                          text=True, timeout=90, env=db.env(SENTRY_DSN=sentry))
    assert (done.returncode, done.stdout.split()) == (0, ["succeeded"] * 2), done.stderr[-3000:]

    found = events(Ingest.envelopes)
    by_check = {event["fingerprint"][2]: event for event in found}
    assert len(by_check) == len(found)  # each failing check once, over both runs
    scheduler = by_check["schedulers"]
    assert (scheduler["level"], scheduler["fingerprint"][:2]) == (
        "error", ["saathii-workers", "health"])
    assert scheduler["message"] == ("health check schedulers is failing: no live scheduler:"
                                    " nothing is sent on time")
    assert {"workers:billing", "job:coin_deduction"} <= set(by_check)


def test_the_run_that_holds_the_lock_checks_in_and_no_other(db, sentry):
    done = subprocess.run([sys.executable, "-c", RUNS_FOR_CRONS], capture_output=True,
                          text=True, timeout=90, env=db.env(SENTRY_DSN=sentry))
    assert done.stdout.split() == ["succeeded", "duplicate", "failed", "skipped", "skipped"], \
        done.stderr[-3000:]

    found = items(Ingest.envelopes, "check_in")
    assert [(c["monitor_slug"], c["status"]) for c in found] == [
        ("coin_deduction", "in_progress"), ("coin_deduction", "ok"),
        (RAISING.name, "in_progress"), (RAISING.name, "error")]
    billing = found[:2]
    assert billing[0]["check_in_id"] == billing[1]["check_in_id"]
    assert billing[1]["duration"] > 0
    assert billing[1]["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "* * * * *"}, "timezone": "Asia/Kolkata",
        "checkin_margin": 1, "max_runtime": 1, "failure_issue_threshold": 1,
        "recovery_threshold": 1}
    assert found[2]["check_in_id"] == found[3]["check_in_id"] != billing[0]["check_in_id"]


def test_no_dsn_means_no_reporting(monkeypatch):
    from workers.observability.alerts import init_sentry
    from workers.settings import Settings

    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert init_sentry(Settings(_env_file=None)) is False


def test_message_arguments_are_stripped_from_any_event():
    from workers.observability.alerts import strip_message_arguments

    event = {"contexts": {"dramatiq": {"data": {
        "queue_name": "default", "actor_name": "x", "message_id": "m", "args": [42],
        "kwargs": {"user_id": 7}, "options": {"scheduled_at": "t", "retries": 1,
                                              "traceback": "..."}}}},
        "logentry": {"message": "Failed to process message %s", "params": ["x(user_id=7)"],
                     "formatted": "Failed to process message x(user_id=7)"},
        "breadcrumbs": {"values": [{"category": "dramatiq.worker", "message": "x(user_id=7)"},
                                   {"category": "workers.actors", "message": "ran"}]}}
    stripped = strip_message_arguments(event, {})
    assert stripped["contexts"]["dramatiq"]["data"] == {
        "queue_name": "default", "actor_name": "x", "message_id": "m",
        "options": {"scheduled_at": "t", "retries": 1}}
    assert "user_id" not in json.dumps(stripped)
    assert stripped["logentry"]["formatted"] == "Failed to process message %s"
    assert stripped["breadcrumbs"]["values"][-1]["message"] == "ran"
