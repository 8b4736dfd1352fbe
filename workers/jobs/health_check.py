"""health_check, every 5 minutes: the checks of `python -m workers health`
(workers.observability.health) as of the run's slot, recorded in health_checks.

A check that turns failing is alerted once (an ERROR log line, a Sentry message and a post
to ALERT_WEBHOOK_URL, after the run commits), not at every run while it stays failing; its
recovery is logged and posted once. A
turn is measured against the run before this one, whose row the job's lock orders: two
replicas never both see the same turn, and a run that rolls back alerts nothing.
"""

import logging
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from pydantic import Field

from workers.engine.db import queries
from workers.engine.jobs import JobParams
from workers.engine.runs import RunContext
from workers.observability import alerts, health, webhook
from workers.schedule import JOBS
from workers.settings import DEFAULT_PROCESS_STALE_SECONDS, DEFAULT_REDIS_URL

log = logging.getLogger(__name__)


class Params(JobParams):
    #: The broker's Redis, whose queues are checked (REDIS_URL).
    redis_url: str = DEFAULT_REDIS_URL
    #: Where free disk is checked (LOG_DIR); None: not checked.
    log_dir: Path | None = None
    #: A process whose heartbeat is older than this is dead (PROCESS_STALE_SECONDS).
    process_stale_seconds: int = Field(DEFAULT_PROCESS_STALE_SECONDS, ge=5)
    #: Where the team is told of a check turning failing and of its recovery
    #: (ALERT_WEBHOOK_URL); None: not posted.
    alert_webhook_url: str | None = None


def health_check(conn: psycopg.Connection, run: RunContext) -> dict:
    params: Params = run.params
    jobs = list(JOBS.values())
    checks = [
        *health.database_checks(conn, jobs, run.scheduled_for, run.timezone,
                                timedelta(seconds=params.process_stale_seconds)),
        *health.redis_checks(params.redis_url, jobs, run.scheduled_for),
        *health.machine_checks(params.log_dir),
    ]
    report = health.Report(checks)
    sql = queries("health_check.sql")
    before = conn.execute(sql["previous"], {"slot": run.scheduled_for}).fetchone()
    was_failing = {c["check"] for c in (before["checks"] if before else [])
                   if c["verdict"] == "fail"}
    failing = {c.name for c in checks if c.verdict is health.Verdict.FAIL}
    recorded = conn.execute(sql["record"], {
        "slot": run.scheduled_for, "verdict": str(report.verdict),
        "checks": Jsonb([c.as_json() for c in checks])}).fetchone()
    turned = [c for c in checks if c.name in failing - was_failing] if recorded else []
    recovered = sorted(was_failing - failing) if recorded else []
    url = params.alert_webhook_url
    for check in turned:
        run.after_commit(lambda check=check: alerts.health_failing(check))
        run.after_commit(lambda check=check: webhook.post(
            url, f":red_circle: saathii-workers: health check {check.name} is failing:"
                 f" {check.detail}"))
    for name in recovered:
        run.after_commit(lambda name=name: alerts.health_recovered(name))
        run.after_commit(lambda name=name: webhook.post(
            url, f":large_green_circle: saathii-workers: health check {name} has recovered"))
    return {"verdict": str(report.verdict), "failing": sorted(failing),
            "warnings": sorted(c.name for c in checks if c.verdict is health.Verdict.WARN),
            "alerted": [c.name for c in turned], "recovered": recovered}
