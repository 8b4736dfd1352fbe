"""Which jobs are overdue, overrunning or paused, from the job table alone.

A job's latest slot that is due (its cron in APP_TIMEZONE, at or before now minus the job's
grace) and has no succeeded or running attempt is overdue: its scheduler is down, its
workers are gone, or its run failed. An attempt still running past the job's time limit is
overrunning. A paused job is paused, never overdue.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

import psycopg

from workers.engine import cron
from workers.engine.db import queries
from workers.engine.jobs import Job


class State(StrEnum):
    ON_TIME = "on time"
    OVERDUE = "overdue"
    OVERRUNNING = "overrunning"
    PAUSED = "paused"


@dataclass(frozen=True)
class JobState:
    job: str
    state: State
    #: The latest due slot: what is overdue when the job is.
    slot: datetime | None
    #: What became of that slot (a run's status), or of the run overrunning.
    detail: str


def job_states(conn: psycopg.Connection, jobs: Iterable[Job], now: datetime,
               timezone: ZoneInfo) -> dict[str, JobState]:
    """The state of each job at `now`, by name, in the table's order."""
    jobs = list(jobs)
    sql = queries("health.sql")
    slots = {job.name: cron.latest_at_or_before(job.cron, timezone, now - job.grace)
             for job in jobs}
    due = [(name, slot) for name, slot in slots.items() if slot is not None]
    rows = {row["job"]: row for row in conn.execute(sql["slot_states"], {
        "jobs": [name for name, _ in due], "slots": [slot for _, slot in due]})}
    overrunning = {}
    for row in conn.execute(sql["overrunning"], {
            "jobs": [job.name for job in jobs], "limits": [job.time_limit for job in jobs],
            "now": now}):
        overrunning.setdefault(row["job"], row)

    states = {}
    for job in jobs:
        row, slot = rows.get(job.name), slots[job.name]
        if row is not None and row["paused"]:
            states[job.name] = JobState(job.name, State.PAUSED, slot, "paused")
        elif job.name in overrunning:
            run = overrunning[job.name]
            states[job.name] = JobState(
                job.name, State.OVERRUNNING, slot,
                f"the run for {run['scheduled_for'].astimezone(timezone).isoformat()} has"
                f" run {run['running_for']:.0f} s on {run['host']}:{run['pid']}, past its"
                f" {job.time_limit.total_seconds():g} s limit")
        elif row is not None and row["slot_status"] not in ("succeeded", "running"):
            what = row["slot_status"] or "no run"
            states[job.name] = JobState(
                job.name, State.OVERDUE, slot,
                f"the slot {slot.astimezone(timezone).isoformat()} is past its"
                f" {job.grace.total_seconds():g} s grace with {what}")
        else:
            states[job.name] = JobState(job.name, State.ON_TIME, slot,
                                        row["slot_status"] if row else "nothing due yet")
    return states
