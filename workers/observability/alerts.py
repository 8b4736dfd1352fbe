"""Alerting through Sentry, for our own processes only: `init_sentry` runs where one boots
(workers.engine.boot), never on import, so a host process keeps its own client.

What reaches Sentry, each once:
- a failed run attempt: one error event, grouped into one issue per job (RunAlerts, a
  subscriber of the run hooks). Dramatiq does not report it again: the actor raises
  JobFailed, a Retry, which its worker and Sentry's Dramatiq middleware leave alone; and
  the run log's lines (logger "workers.runs") are not turned into events.
- an after-commit step that failed, and a run near its time limit: warnings.
- a health check that turned failing (the health_check job): one message, per turn.
- anything else an actor raises outside the run contract (the database unreachable before
  the claim, say), through Sentry's Dramatiq middleware and logging integration.
Nothing personal leaves: no message arguments (user ids, amounts), no local variables.
"""

import logging

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import ignore_logger

from workers.engine.hooks import Finished, Subscriber
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
