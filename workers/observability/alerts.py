"""Alerting through Sentry, for our own processes only: `init_sentry` runs where one boots
(workers.engine.boot), never on import, so a host process keeps its own client.

What reaches Sentry, each once:
- a failed run attempt: one error event, grouped into one issue per job (RunAlerts, a
  subscriber of the run hooks). Dramatiq does not report it again: the actor raises
  JobFailed, a Retry, which its worker and Sentry's Dramatiq middleware leave alone; and
  the run log's lines (logger "workers.runs") are not turned into events.
- an after-commit step that failed, and a run near its time limit: warnings.
- a health check that turned failing (the health_check job): one message, per turn.

And one cron monitor per job of the table (CronMonitors): the run that holds the slot's
lock checks in `in_progress`, then `ok` or `error` with its duration; the monitor's
schedule, timezone, margin and maximum runtime come with every check-in, so Sentry creates
and updates the monitors from the table. A duplicate, a run locked out and a paused run
send nothing: the run that holds the slot reports it, and a paused job has no run to
report (Sentry marks its slots missed; pause the monitor in Sentry for a planned pause).
- anything else an actor raises outside the run contract (the database unreachable before
  the claim, say), through Sentry's Dramatiq middleware and logging integration.
Nothing personal leaves: no message arguments (user ids, amounts), no local variables.
"""

import logging
import math
import threading

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import ignore_logger

from workers.engine.hooks import Finished, Started, Subscriber
from workers.engine.jobs import Job
from workers.engine.runs import Status
from workers.observability.health import Check
from workers.observability.logs import RUN_LOGGER
from workers.settings import Settings

#: What of a Dramatiq message may reach Sentry: never its arguments (user ids, amounts).
MESSAGE_FIELDS_KEPT = ("queue_name", "actor_name", "message_id", "message_timestamp")
MESSAGE_OPTIONS_KEPT = ("scheduled_at", "retries")
#: The first part of every fingerprint of ours: one issue per job and kind of trouble.
FINGERPRINT = "saathii-workers"

#: The health checks' alerts and recoveries (the health_check job): once per turn.
health_log = logging.getLogger("workers.health")


def init_sentry(settings: Settings) -> bool:
    """Start reporting to SENTRY_DSN when it is set; True when reporting."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        integrations=[DramatiqIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        before_send=strip_message_arguments,
    )
    ignore_logger(RUN_LOGGER)  # RunAlerts reports the runs
    ignore_logger(health_log.name)  # health_failing reports the checks
    return True


class RunAlerts(Subscriber):
    """The run hooks' Sentry subscriber."""

    def run_finished(self, event: Finished) -> None:
        outcome, job = event.outcome, event.job.name
        context = {"tags": {"job": job, "trigger": event.trigger},
                   "contexts": {"run": {"scheduled_for": outcome.scheduled_for.isoformat(),
                                        "attempt": outcome.attempt,
                                        "duration_seconds": round(event.duration, 3)}}}
        if outcome.status is Status.FAILED:
            sentry_sdk.capture_exception(outcome.exception, level="error",
                                         fingerprint=[FINGERPRINT, "run-failed", job],
                                         **context)
        for error in outcome.after_commit_errors:
            sentry_sdk.capture_exception(error, level="warning",
                                         fingerprint=[FINGERPRINT, "after-commit", job],
                                         **context)
        if event.near_limit:
            sentry_sdk.capture_message(event.near_limit_message(), level="warning",
                                       fingerprint=[FINGERPRINT, "near-limit", job],
                                       **context)


class CronMonitors(Subscriber):
    """Sentry Crons check-ins of the runs of this process (see the module's docstring)."""

    #: Failed or missed check-ins in a row before Sentry opens an issue, and good ones in a
    #: row before it resolves it.
    FAILURE_ISSUE_THRESHOLD = 1
    RECOVERY_THRESHOLD = 1

    def __init__(self, timezone: str):
        self.timezone = timezone
        self._check_ins: dict[tuple[str, object, int], str] = {}
        self._lock = threading.Lock()

    def monitor_config(self, job: Job) -> dict:
        return {
            "schedule": {"type": "crontab", "value": job.cron},
            "timezone": self.timezone,
            "checkin_margin": math.ceil(job.grace.total_seconds() / 60),
            "max_runtime": math.ceil(job.time_limit.total_seconds() / 60),
            "failure_issue_threshold": self.FAILURE_ISSUE_THRESHOLD,
            "recovery_threshold": self.RECOVERY_THRESHOLD,
        }

    def run_started(self, event: Started) -> None:
        check_in_id = capture_checkin(monitor_slug=event.job.name, status="in_progress",
                                      monitor_config=self.monitor_config(event.job))
        if check_in_id is not None:
            with self._lock:
                self._check_ins[event.job.name, event.scheduled_for, event.attempt] = \
                    check_in_id

    def run_finished(self, event: Finished) -> None:
        outcome = event.outcome
        with self._lock:
            check_in_id = self._check_ins.pop(
                (event.job.name, outcome.scheduled_for, outcome.attempt), None)
        if check_in_id is None:  # it never started: duplicate, paused or locked out
            return
        capture_checkin(monitor_slug=event.job.name, check_in_id=check_in_id,
                        status="ok" if outcome.status is Status.SUCCEEDED else "error",
                        duration=event.duration, monitor_config=self.monitor_config(event.job))


def strip_message_arguments(event: dict, hint: dict) -> dict:
    """Keep the message's identity and schedule, drop its arguments wherever Dramatiq put
    them: the integration's message context, and Dramatiq's log lines, which print the
    message with its arguments (as the event's log entry and as breadcrumbs)."""
    data = event.get("contexts", {}).get("dramatiq", {}).get("data")
    if isinstance(data, dict):
        kept = {key: data[key] for key in MESSAGE_FIELDS_KEPT if key in data}
        options = data.get("options") or {}
        kept["options"] = {key: options[key] for key in MESSAGE_OPTIONS_KEPT if key in options}
        event["contexts"]["dramatiq"]["data"] = kept
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        logentry.pop("params", None)
        logentry["formatted"] = logentry.get("message", "")
    breadcrumbs = event.get("breadcrumbs", {}).get("values", [])
    for crumb in breadcrumbs:
        if str(crumb.get("category", "")).startswith("dramatiq"):
            crumb["message"] = "(dramatiq log line withheld: it may carry message arguments)"
            crumb.pop("data", None)
    return event


def health_failing(check: Check) -> None:
    """A health check turned failing: an ERROR line and a Sentry message (one issue per
    check), once; the health_check job calls this only on the turn."""
    health_log.error("health check %s is failing: %s", check.name, check.detail)
    sentry_sdk.capture_message(f"health check {check.name} is failing: {check.detail}",
                               level="error", fingerprint=[FINGERPRINT, "health", check.name],
                               tags={"check": check.name})


def health_recovered(name: str) -> None:
    health_log.info("health check %s has recovered", name)
