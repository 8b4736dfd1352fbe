"""The missed-run policy. periodiq sends nothing for slots that pass while it is down, and
its middleware drops scheduled messages (and their retries) older than its skip delay. A
job whose policy is MissedRuns.LATEST therefore gets its latest slot run once, however
many slots were missed, when that slot has no successful or running attempt."""

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from workers import cron
from workers.db import queries
from workers.runs import RunContext
from workers.schedule import JOBS, Job, MissedRuns

#: A slot counts as missed only once its own message has had this long to run.
GRACE = timedelta(minutes=2)

Send = Callable[[str, datetime], None]


def missed_slots(conn: psycopg.Connection, jobs: Iterable[Job], now: datetime,
                 timezone: ZoneInfo) -> list[tuple[str, datetime]]:
    """(job name, slot) for each job whose latest slot at `now` was missed."""
    latest = {}
    for job in jobs:
        if job.missed is MissedRuns.LATEST:
            slot = cron.latest_at_or_before(job.cron, timezone, now - GRACE)
            if slot is not None:
                latest[job.name] = (slot, 1 + job.max_retries)
    if not latest:
        return []
    sql = queries("runs.sql")
    conn.execute(sql["mark_abandoned"], {"jobs": list(latest)})
    rows = conn.execute(sql["missed"], {
        "jobs": list(latest),
        "slots": [slot for slot, _ in latest.values()],
        "max_attempts": [attempts for _, attempts in latest.values()],
    }).fetchall()
    return [(row["job"], row["scheduled_for"]) for row in rows]


def catch_up(conn: psycopg.Connection, run: RunContext, send: Send) -> dict:
    """Ask, once this run commits, for the latest missed slot of each job to run."""
    missed = missed_slots(conn, JOBS.values(), run.scheduled_for, run.timezone)
    for name, slot in missed:
        run.after_commit(lambda name=name, slot=slot: send(name, slot))
    return {"missed": [{"job": name, "scheduled_for": slot.isoformat()}
                       for name, slot in missed]}
