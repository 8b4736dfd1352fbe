"""ALERT_WEBHOOK_URL against a real local HTTP receiver: once per incident, once at its
recovery, retried when the receiver fails, given up when it refuses."""

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers.engine import runtime
from workers.engine.hooks import Hooks
from workers.engine.runs import run_job
from workers.observability import webhook
from workers.observability.webhook import RunWebhook
from workers.schedule import JOBS

S1 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
#: Longest wait for a post to arrive (seconds); a ceiling, not an expected duration.
DEADLINE = 15


class Receiver(BaseHTTPRequestHandler):
    posts: list[dict] = []
    #: Statuses to answer with, in turn, before answering 200.
    answers: list[int] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = Receiver.answers.pop(0) if Receiver.answers else 200
        if status == 200:
            Receiver.posts.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.posts, Receiver.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def texts(count: int) -> list[str]:
    deadline = time.monotonic() + DEADLINE
    while len(Receiver.posts) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and nothing more arrives
    return [post["text"] for post in Receiver.posts]


def failing(conn, run):
    raise RuntimeError("the provider is down")


def test_a_failing_job_is_posted_once_per_incident_and_once_recovered(conn, receiver):
    current = runtime.current()
    options = replace(current.run_options(), hooks=Hooks(RunWebhook(receiver, current.pool)))
    job = JOBS["presence_cleanup"]
    run_job(conn, job, S1, options, work=failing)
    run_job(conn, job, S1 + MINUTE, options, work=failing)  # the same incident
    run_job(conn, job, S1 + 2 * MINUTE, options)  # recovered
    run_job(conn, job, S1 + 3 * MINUTE, options)  # nothing to say

    posted = texts(2)
    assert posted == [
        ":red_circle: saathii-workers: presence_cleanup failed for 2026-11-22T10:00:00+00:00"
        " (attempt 1): RuntimeError: the provider is down",
        ":large_green_circle: saathii-workers: presence_cleanup succeeded again for"
        " 2026-11-22T10:02:00+00:00"]
    assert Receiver.posts[0]["content"] == Receiver.posts[0]["text"]  # Discord's field


def test_a_health_check_turning_failing_is_posted_once(conn, receiver):
    options = runtime.current().run_options()
    options = replace(options, settings={**options.settings, "alert_webhook_url": receiver})
    for slot in (S1, S1 + 5 * MINUTE):
        run_job(conn, JOBS["health_check"], slot, options)

    posted = [text for text in texts(1) if "schedulers" in text]
    assert posted == [":red_circle: saathii-workers: health check schedulers is failing:"
                      " no live scheduler: nothing is sent on time"]


def test_a_failing_receiver_is_retried_and_a_refusing_one_is_not(receiver, monkeypatch):
    monkeypatch.setattr(webhook, "BACKOFF", (0.05,))
    Receiver.answers = [500, 503]
    assert webhook.send(receiver, "down, then up") is True
    assert texts(1) == ["down, then up"]

    Receiver.posts, Receiver.answers = [], [400]
    assert webhook.send(receiver, "refused") is False
    Receiver.answers = [500, 500, 500]
    assert webhook.send(receiver, "down for good") is False
    assert Receiver.posts == []
    assert webhook.post(None, "no URL: nothing") is None
