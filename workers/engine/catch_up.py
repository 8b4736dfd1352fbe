"""The missed-run policy. periodiq sends nothing for slots that pass while it is down, and
its middleware drops scheduled messages (and their retries) older than its skip delay. A
job whose policy is MissedRuns.LATEST therefore gets its latest slot run once, however
many slots were missed, when that slot has no successful or running attempt; one whose
policy is MissedRuns.ALL gets every such slot within its catch-up window run once, newest
first, one a catch-up run. This is the work of the catch_up job (every minute, and when
a worker process boots); its query is db/catch_up.sql."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from workers.engine import cron
from workers.engine.db import queries
from workers.engine.jobs import Job, MissedRuns
from workers.engine.runs import RunContext
from workers.schedule import JOBS

#: A slot counts as missed only once its own message has had this long to run.
GRACE = timedelta(minutes=2)


def candidate_slots(job: Job, now: datetime, timezone: ZoneInfo) -> list[datetime]:
    """The slots of `job` its policy would run if missed, as of `now`."""
    due_by = now - GRACE
    if job.missed is MissedRuns.LATEST:
        slot = cron.latest_at_or_before(job.cron, timezone, due_by)
        return [] if slot is None else [slot]
    if job.missed is MissedRuns.ALL:
        return list(cron.instants(job.cron, timezone, now - job.catch_up_window,
                                  due_by + timedelta(microseconds=1)))
    return []


def missed_slots(conn: psycopg.Connection, jobs: Iterable[Job], now: datetime,
                 timezone: ZoneInfo) -> list[tuple[str, datetime]]:
    """(job name, slot) for each slot missed, oldest first per job."""
    candidates = [(job, slot) for job in jobs for slot in candidate_slots(job, now, timezone)]
    if not candidates:
        return []
    conn.execute(queries("runs.sql")["mark_abandoned"],
                 {"jobs": sorted({job.name for job, _ in candidates})})
    rows = conn.execute(queries("catch_up.sql")["missed"], {
        "jobs": [job.name for job, _ in candidates],
        "slots": [slot for _, slot in candidates],
        "max_attempts": [1 + job.max_retries for job, _ in candidates],
    }).fetchall()
    return [(row["job"], row["scheduled_for"]) for row in rows]


def catch_up(conn: psycopg.Connection, run: RunContext) -> dict:
    """Ask, once this run commits, for the newest missed slot of each job to run (through
    `run.send`: the broker). Older missed slots of a job (MissedRuns.ALL) go one a run, in
    the runs that follow (every minute): sent together they would only race for the job's
    lock and skip each other. Without a broker (`run.send` None) nothing is sent."""
    missed = missed_slots(conn, JOBS.values(), run.scheduled_for, run.timezone)
    newest = dict(missed) if run.send is not None else {}  # oldest first: the last one wins
    for name, slot in newest.items():
        run.after_commit(lambda name=name, slot=slot: run.send(name, slot))
    return {"missed": [{"job": name, "scheduled_for": slot.isoformat()}
                       for name, slot in missed],
            "sent": [{"job": name, "scheduled_for": slot.isoformat()}
                     for name, slot in newest.items()]}
