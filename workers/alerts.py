"""Alerting through Sentry: initialised before the broker exists (its Dramatiq integration
patches the broker class), and with nothing personal in what it sends."""

import logging

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration

from workers.settings import Settings

log = logging.getLogger(__name__)

#: What of a Dramatiq message may reach Sentry: never its arguments (user ids, amounts).
MESSAGE_FIELDS_KEPT = ("queue_name", "actor_name", "message_id", "message_timestamp")
MESSAGE_OPTIONS_KEPT = ("scheduled_at", "retries")


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
    return True


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


def warn(message: str) -> None:
    """A warning someone must act on, though nothing failed: to the log, and to Sentry
    when it reports (Sentry makes events of ERROR log lines only)."""
    log.warning(message)
    sentry_sdk.capture_message(message, level="warning")
