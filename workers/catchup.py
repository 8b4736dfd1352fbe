"""The missed-run policy. periodiq sends nothing for slots that pass while it is down, and
its middleware drops scheduled messages (and their retries) older than its skip delay. A
job whose policy is MissedRuns.LATEST therefore gets its latest slot run once, however
many slots were missed, when that slot has no successful or running attempt; one whose
policy is MissedRuns.ALL gets every such slot within its catch-up window run once, newest
first, one a catch-up run."""

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
    sql = queries("runs.sql")
    conn.execute(sql["mark_abandoned"], {"jobs": sorted({job.name for job, _ in candidates})})
    rows = conn.execute(sql["missed"], {
        "jobs": [job.name for job, _ in candidates],
        "slots": [slot for _, slot in candidates],
        "max_attempts": [1 + job.max_retries for job, _ in candidates],
    }).fetchall()
    return [(row["job"], row["scheduled_for"]) for row in rows]


def catch_up(conn: psycopg.Connection, run: RunContext, send: Send) -> dict:
    """Ask, once this run commits, for the newest missed slot of each job to run. Older
    missed slots of a job (MissedRuns.ALL) go one a run, in the runs that follow (every
    minute): sent together they would only race for the job's lock and skip each other."""
    missed = missed_slots(conn, JOBS.values(), run.scheduled_for, run.timezone)
    newest = dict(missed)  # oldest first per job: the last one wins
    for name, slot in newest.items():
        run.after_commit(lambda name=name, slot=slot: send(name, slot))
    return {"missed": [{"job": name, "scheduled_for": slot.isoformat()}
                       for name, slot in missed],
            "sent": [{"job": name, "scheduled_for": slot.isoformat()}
                     for name, slot in newest.items()]}
