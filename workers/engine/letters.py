"""Dead letters and the runs they asked for: which slot each was for, what became of that
slot, why the message died, and sending its run again. The CLI's `dead-letters` and the
admin's /api/dead-letters both work through here (the letters themselves are read from
Redis by workers.engine.queues)."""

from __future__ import annotations

from datetime import datetime

import dramatiq
import psycopg
from redis import Redis

from workers.engine import queues
from workers.engine.broker import send_run
from workers.engine.db import queries
from workers.engine.queues import DeadLetter
from workers.engine.runs import slot_of
from workers.errors import UsageError
from workers.schedule import JOBS


def slot(letter: DeadLetter) -> datetime | None:
    """The slot a dead letter's run was for; None if it names no job's slot."""
    if letter.actor not in JOBS or letter.slot is None:
        return None
    try:
        return slot_of(datetime.fromisoformat(letter.slot))
    except (ValueError, OverflowError):
        return None


def outcomes(conn: psycopg.Connection, letters: list[DeadLetter]) -> dict:
    """The last attempt recorded for each dead letter's (job, slot)."""
    asked = [(letter.actor, found) for letter in letters
             if (found := slot(letter)) is not None]
    if not asked:
        return {}
    rows = conn.execute(queries("runs.sql")["slot_outcomes"], {
        "jobs": [job for job, _ in asked], "slots": [when for _, when in asked]})
    return {(row["job"], row["scheduled_for"]): row for row in rows}


def why(letter: DeadLetter, runs: dict) -> str:
    """Why it died: its run's recorded error, else Dramatiq's traceback; a message that
    names no slot of a job was refused as invalid before any run."""
    run = runs.get((letter.actor, slot(letter)))
    if run is not None and run["error"]:
        return run["error"]
    if letter.traceback_tail:
        return letter.traceback_tail
    if slot(letter) is None:
        return "refused as an invalid message: it never ran"
    return "no error recorded"


def resend(conn: psycopg.Connection, client: Redis, broker: dramatiq.Broker,
           letter: DeadLetter) -> tuple[dramatiq.Message, str | None]:
    """Send the dead letter's run again as a new message and take it off the dead-letter
    queue; the message, and the slot's status when it is already taken (succeeded or
    running: the run will be a duplicate and do nothing). UsageError for a letter that
    names no slot of a job."""
    when = slot(letter)
    if when is None:
        raise UsageError(f"{letter.message_id} ({letter.actor}) names no slot of a job:"
                         " nothing to run again; purge it")
    message = send_run(broker, letter.actor, when)
    queues.remove(client, [letter])
    row = conn.execute(queries("runs.sql")["last_attempt"],
                       {"job": letter.actor, "scheduled_for": when}).fetchone()
    taken = row["status"] if row is not None and row["status"] in ("succeeded", "running") \
        else None
    return message, taken
