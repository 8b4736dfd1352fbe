"""Alerts where the team already talks: ALERT_WEBHOOK_URL, a Slack or Discord incoming
webhook (or anything that takes their JSON). Posted once per incident and once at its
recovery:

- a job's run failing, when its previous slot had not failed and it is no retry of a
  failure (RunWebhook); its recovery, the first success after that;
- a health check turning failing (overdue jobs, no live scheduler or workers, ...), from
  the health_check job, and its recovery.

Each post is sent from a thread of its own, tried a few times with a short backoff, and
never blocks or fails a run: a webhook that stays down is logged and given up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

from workers.engine.db import Pool, queries
from workers.engine.hooks import Finished, Subscriber
from workers.engine.runs import Status

log = logging.getLogger(__name__)

#: Tries of one post, the pause before each retry (seconds), and each try's timeout.
TRIES = 3
BACKOFF = (1.0, 4.0)
TIMEOUT = 5.0


def payload(text: str) -> dict:
    """What both Slack (`text`) and Discord (`content`) incoming webhooks accept."""
    return {"text": text, "content": text, "username": "saathii-workers"}


def send(url: str, text: str) -> bool:
    """Post `text`, retrying; whether it was accepted (2xx)."""
    body = json.dumps(payload(text)).encode()
    for attempt in range(TRIES):
        if attempt:
            time.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT):
                return True
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500 and error.code != 429:  # refused: retrying won't help
                log.warning("alert webhook refused the post (HTTP %s): %s", error.code, text)
                return False
        except (urllib.error.URLError, OSError):
            pass
    log.warning("alert webhook unreachable after %d tries; not sent: %s", TRIES, text)
    return False


def post(url: str | None, text: str) -> threading.Thread | None:
    """Send `text` in the background (nothing without a URL); the thread, for tests."""
    if not url:
        return None
    thread = threading.Thread(target=send, args=(url, text), daemon=True,
                              name="saathii-alert-webhook")
    thread.start()
    return thread


class RunWebhook(Subscriber):
    """A job's failures, once per incident, and its recovery (see the module)."""

    def __init__(self, url: str, pool: Pool):
        self.url, self.pool = url, pool

    def run_finished(self, event: Finished) -> None:
        outcome = event.outcome
        if outcome.status not in (Status.FAILED, Status.SUCCEEDED):
            return
        with self.pool.connection() as conn:
            before = conn.execute(queries("runs.sql")["previous_finished"], {
                "job": outcome.job, "scheduled_for": outcome.scheduled_for}).fetchone()
        was_failing = before is not None and before["status"] == "failed"
        if event.trigger == "retry":  # Dramatiq retries only what failed: this slot did
            was_failing = True
        slot = outcome.scheduled_for.isoformat()
        if outcome.status is Status.FAILED and not was_failing:
            post(self.url, f":red_circle: saathii-workers: {outcome.job} failed for {slot}"
                           f" (attempt {outcome.attempt}): {outcome.error}")
        elif outcome.status is Status.SUCCEEDED and was_failing:
            post(self.url, f":large_green_circle: saathii-workers: {outcome.job} succeeded"
                           f" again for {slot}")
