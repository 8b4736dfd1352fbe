"""The run contract: how every job runs, from periodiq, a retry, the catch-up, the CLI or
a test alike.

1. Logical time. A run is for one slot, `scheduled_for` (a whole minute); the work
   computes with it, never with the wall clock.
2. Dedupe. The run claims its (job, slot) row in job_runs. A slot that succeeded or is
   running elsewhere cannot be claimed: the second message does nothing. A slot whose
   attempt failed, was skipped or was abandoned is claimed again as attempt + 1.
3. Singleton. The work runs in one transaction that first takes the job's advisory lock
   with pg_try_advisory_xact_lock: a crash or a lost connection releases the lock and
   rolls the writes back together. Lock held elsewhere: the run is skipped, never waits.
4. Record. The row goes running -> succeeded (committed with the work) / failed / skipped,
   with its result, error or reason and its duration.
5. Pause. A paused job records a skipped run and does nothing.
6. Parameters. The job's parameters (its model, the settings, job_settings.overrides)
   are validated once, here: a bad override fails the run before any work.
7. After commit. Steps outside the database (Redis) run once the work has committed;
   their failure is reported and never undoes it.

Whatever happens is told to the hooks (workers.engine.hooks): nothing else here logs,
alerts or counts.
"""

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb
from redis import Redis

from workers.engine.db import queries
from workers.engine.hooks import Claimed, Finished, Hooks, Started
from workers.engine.jobs import LOCK_NAMESPACE, Job, JobParams
from workers.errors import WorkersError


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    #: Not a run: the slot was already taken, nothing was done or recorded.
    DUPLICATE = "duplicate"


#: Sends a run of a job for a slot to the workers (workers.engine.broker.send_run).
Send = Callable[[str, datetime], object]


@dataclass
class RunContext:
    """What a job's work function gets besides its connection."""

    job: Job
    scheduled_for: datetime
    timezone: ZoneInfo
    attempt: int
    #: The job's parameters, validated: an instance of its model (workers.engine.jobs).
    params: JobParams
    #: For after-commit steps (events, caches); None where no Redis is configured.
    redis: Redis | None = None
    #: For the catch-up's after-commit sends; None where no broker is at hand.
    send: Send | None = None
    _after_commit: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def local_time(self) -> datetime:
        """The slot on the business's clock (APP_TIMEZONE)."""
        return self.scheduled_for.astimezone(self.timezone)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the work has committed (e.g. Redis writes). Its failure is
        reported and never undoes the committed work."""
        self._after_commit.append(callback)


Work = Callable[[psycopg.Connection, RunContext], dict]


@dataclass(frozen=True)
class RunOutcome:
    job: str
    scheduled_for: datetime
    status: Status
    attempt: int | None = None
    result: dict | None = None
    error: str | None = None
    reason: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    #: What failed among the after-commit steps of a run that succeeded.
    after_commit_errors: tuple[BaseException, ...] = field(default=(), repr=False,
                                                           compare=False)

    def as_json(self) -> dict:
        fields = {"job": self.job, "scheduled_for": self.scheduled_for.isoformat(),
                  "status": str(self.status), "attempt": self.attempt, "result": self.result,
                  "error": self.error, "reason": self.reason}
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What the contract needs from the process, passed down from its boot."""

    timezone: ZoneInfo
    lock_timeout_ms: int
    abandon_grace: timedelta
    #: Where job parameters take their defaults: setting name -> value.
    settings: Mapping[str, object] = field(default_factory=dict)
    redis: Redis | None = None
    send: Send | None = None
    hooks: Hooks = field(default_factory=Hooks)


class _LockHeld(Exception):
    pass


def slot_of(instant: datetime) -> datetime:
    """The slot an instant belongs to: its whole minute, in UTC. Naive times are refused:
    a slot is an instant, and a naive time is not one."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"scheduled_for must carry a timezone: {instant.isoformat()}")
    return instant.astimezone(UTC).replace(second=0, microsecond=0)


def run_job(conn: psycopg.Connection, job: Job, scheduled_for: datetime, options: RunOptions,
            *, trigger: str = "schedule", message_id: str | None = None,
            work: Work | None = None) -> RunOutcome:
    """Run `job` (its own work, or `work`) for its slot at `scheduled_for` under the
    contract above. `conn` must be in autocommit mode; the work's transaction is opened
    here."""
    slot = slot_of(scheduled_for)
    began = time.monotonic()
    claimed = _claim(conn, job, slot, options, trigger, message_id)
    if claimed is None:
        outcome, duration = _duplicate(conn, job, slot), 0.0
    else:
        run_id, attempt = claimed["run_id"], claimed["attempt"]
        options.hooks.claimed(Claimed(job=job, scheduled_for=slot, attempt=attempt,
                                      trigger=trigger, run_id=run_id))
        outcome, after_commit = _attempt(conn, job, slot, options, run_id, attempt, trigger,
                                         work)
        duration = time.monotonic() - began  # the time limit is the transaction's
        if after_commit:
            outcome = replace(outcome, after_commit_errors=_after_commit(after_commit))
    options.hooks.finished(Finished(job=job, outcome=outcome, trigger=trigger,
                                    duration=duration))
    return outcome


def _claim(conn: psycopg.Connection, job: Job, slot: datetime, options: RunOptions,
           trigger: str, message_id: str | None) -> dict | None:
    sql = queries("runs.sql")
    conn.execute(sql["mark_abandoned"], {"jobs": [job.name]})
    return conn.execute(sql["claim"], {
        "job": job.name, "scheduled_for": slot, "trigger": trigger, "message_id": message_id,
        "deadline": job.time_limit + options.abandon_grace,
        "host": socket.gethostname(), "pid": os.getpid(),
    }).fetchone()


def _attempt(conn: psycopg.Connection, job: Job, slot: datetime, options: RunOptions,
             run_id: int, attempt: int, trigger: str, work: Work | None,
             ) -> tuple[RunOutcome, list[Callable[[], None]]]:
    """The claimed attempt: pause, parameters, then the work under the job's lock; its
    outcome, and the after-commit steps a success leaves to run."""
    sql = queries("runs.sql")

    def outcome(status: Status, **details) -> RunOutcome:
        return RunOutcome(job=job.name, scheduled_for=slot, status=status, attempt=attempt,
                          **details)

    controls = conn.execute(sql["job_settings"], {"job": job.name}).fetchone() or {}
    if controls.get("paused"):
        _finish(conn, run_id, Status.SKIPPED, skip_reason="paused")
        return outcome(Status.SKIPPED, reason="paused"), []

    try:
        context = RunContext(job=job, scheduled_for=slot, timezone=options.timezone,
                             attempt=attempt, redis=options.redis, send=options.send,
                             params=job.parameters(options.settings, controls.get("overrides")))
        with conn.transaction():
            locked = conn.execute(sql["begin_work"], {
                "statement_timeout": str(_ms(job.time_limit)),
                "lock_timeout": str(options.lock_timeout_ms),
                "namespace": LOCK_NAMESPACE, "lock_id": job.lock_id,
            }).fetchone()["locked"]
            if not locked:
                raise _LockHeld
            # In the transaction, under the lock: a subscriber only queues what it reports.
            options.hooks.started(Started(job=job, scheduled_for=slot, attempt=attempt,
                                          trigger=trigger, run_id=run_id))
            result = _json_safe((work or job.perform())(conn, context))
            _finish(conn, run_id, Status.SUCCEEDED, result=result)
    except _LockHeld:
        reason = f"locked: another run of {job.name} holds its lock"
        _finish(conn, run_id, Status.SKIPPED, skip_reason=reason)
        return outcome(Status.SKIPPED, reason=reason), []
    except Exception as error:
        message = f"{type(error).__name__}: {error}".strip()
        return outcome(Status.FAILED, error=_record_failure(conn, run_id, message),
                       exception=error), []
    return outcome(Status.SUCCEEDED, result=result), context._after_commit


def _after_commit(steps: list[Callable[[], None]]) -> tuple[BaseException, ...]:
    """Run every step, whatever the others do; what failed."""
    failed = []
    for step in steps:
        try:
            step()
        except Exception as error:
            failed.append(error)
    return tuple(failed)


def _duplicate(conn: psycopg.Connection, job: Job, slot: datetime) -> RunOutcome:
    row = conn.execute(queries("runs.sql")["last_attempt"],
                       {"job": job.name, "scheduled_for": slot}).fetchone()
    if row is None:  # the row vanished between claim and read: report, do nothing
        reason = "duplicate: slot taken concurrently"
    else:
        reason = (f"duplicate: slot already {row['status']} "
                  f"(attempt {row['attempt']}, {row['host']} pid {row['pid']})")
    return RunOutcome(job=job.name, scheduled_for=slot, status=Status.DUPLICATE, reason=reason)


def _finish(conn: psycopg.Connection, run_id: int, status: Status, *, result: dict | None = None,
            error: str | None = None, skip_reason: str | None = None) -> None:
    conn.execute(queries("runs.sql")["finish"], {
        "run_id": run_id, "status": str(status),
        "result": None if result is None else Jsonb(result),
        "error": error, "skip_reason": skip_reason,
    })


def _record_failure(conn: psycopg.Connection, run_id: int, message: str) -> str:
    """The failure as recorded. Best effort: on a lost connection the row stays 'running'
    and is later recognised as abandoned, which the next claim treats like a failure."""
    try:
        _finish(conn, run_id, Status.FAILED, error=message)
    except (psycopg.Error, WorkersError):
        return f"{message} (not recorded: the database is unreachable)"
    return message


def _json_safe(result: dict) -> dict:
    """The result as it is recorded: JSON, times in ISO 8601, money as exact strings."""
    if not isinstance(result, dict):
        raise TypeError(f"a job's work must return a dict, not {type(result).__name__}")
    return json.loads(json.dumps(result, default=_json_value))


def _json_value(value: object) -> str:
    if isinstance(value, date):  # datetime included
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"a job's result cannot hold a {type(value).__name__}")


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)
