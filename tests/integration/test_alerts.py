"""Sentry alerting against a real local stand-in for Sentry's ingest endpoint: a failing
actor is reported, and nothing personal (message arguments, local variables) leaves."""

import gzip
import json
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

#: The worker process: runs one message of an actor that fails, then flushes Sentry.
FAILING_RUN = """
from datetime import UTC, datetime
import dramatiq, sentry_sdk, workers
worker = dramatiq.Worker(workers.broker, worker_timeout=50, worker_threads=1)
worker.start()
argument = datetime.now(UTC).isoformat()
print(argument)
workers.broker.get_actor("presence_cleanup").send_with_options(
    kwargs={"scheduled_for": argument})
workers.broker.join("default", timeout=30_000)
worker.stop()
sentry_sdk.flush(10)
"""

#: The worker process: one run of a job that takes most of its (shortened) time limit.
SLOW_RUN = """
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo
import psycopg, sentry_sdk, workers
from psycopg.rows import dict_row
from workers.runs import RunOptions, run_job
from workers.schedule import JOBS

job = replace(JOBS["coin_deduction"], time_limit=timedelta(milliseconds=400))
options = RunOptions(timezone=ZoneInfo("UTC"), lock_timeout_ms=1000,
                     abandon_grace=timedelta(seconds=60))
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, row_factory=dict_row) as conn:
    work = lambda conn, run: conn.execute("SELECT pg_sleep(0.25)") and {}
    print(run_job(conn, job, work, datetime.now(UTC), options).status)
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


def events(envelopes: list[bytes]) -> list[dict]:
    found = []
    for envelope in envelopes:
        lines = envelope.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                found.append(json.loads(payload))
    return found


def test_a_failing_actor_is_reported_without_its_arguments_or_locals(db, sentry,
                                                                      schemaless_url):
    done = subprocess.run([sys.executable, "-c", FAILING_RUN], capture_output=True, text=True,
                          timeout=90, env=db.env(SENTRY_DSN=sentry, DATABASE_URL=schemaless_url))
    assert done.returncode == 0, done.stderr[-3000:]

    [event] = events(Ingest.envelopes)
    [exception] = event["exception"]["values"][-1:]
    assert exception["type"] == "UndefinedTable"
    message = event["contexts"]["dramatiq"]["data"]
    assert message["actor_name"] == "presence_cleanup"
    assert "kwargs" not in message and "args" not in message
    argument = done.stdout.strip().splitlines()[0]
    assert argument not in b"".join(Ingest.envelopes).decode(), \
        "the message's arguments must not leave"
    for value in event["exception"]["values"]:
        for frame in value.get("stacktrace", {}).get("frames", []):
            assert "vars" not in frame, "local variables must not leave"


def test_a_run_near_its_time_limit_is_reported_as_a_warning(db, sentry):
    done = subprocess.run([sys.executable, "-c", SLOW_RUN], capture_output=True, text=True,
                          timeout=90, env=db.env(SENTRY_DSN=sentry))
    assert (done.returncode, done.stdout.strip()) == (0, "succeeded"), done.stderr[-3000:]

    [event] = events(Ingest.envelopes)
    assert event["level"] == "warning"
    assert event["message"].endswith(
        "of its 0.4 s time limit. Split billing further: raise BILLING_SHARDS.")


def test_no_dsn_means_no_reporting(monkeypatch):
    from workers.alerts import init_sentry
    from workers.settings import Settings

    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert init_sentry(Settings(_env_file=None)) is False


def test_message_arguments_are_stripped_from_any_event():
    from workers.alerts import strip_message_arguments

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
