"""The Dramatiq actors: one per job of the table, each a thin shell made by `job_actor`:
it validates its message, opens the run (logical time, dedupe, lock, record) and lets the
run contract call the job's work. A failed run raises JobFailed, so Dramatiq retries it per
the job table; the run contract has already logged and reported it.

A message may carry one keyword argument, `scheduled_for` (ISO 8601 with a timezone);
without it the slot is periodiq's `scheduled_at` option, or the time of delivery for a
message sent by hand. Anything else is refused: the message fails without retries and
goes to Dramatiq's dead-letter queue, having written nothing.
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError, field_validator

from workers.engine import runtime
from workers.engine.db import schema_version
from workers.engine.jobs import Job
from workers.engine.periodic import Periodic
from workers.engine.runs import Status, run_job, slot_of
from workers.errors import InvalidMessage, JobFailed

#: Retry backoff of a failed run (milliseconds). Short, because periodiq drops retries of a
#: scheduled message once it is older than its skip delay; the catch-up covers the rest.
MIN_BACKOFF_MS = 2_000
MAX_BACKOFF_MS = 10_000
#: Dramatiq's time limit exceeds the job's by this much, so the database's
#: statement_timeout, which rolls back cleanly, normally fires first (milliseconds).
TIME_LIMIT_MARGIN_MS = 5_000


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ISO 8601 text with an offset, nothing else: pydantic would read a number as a unix
    #: time, and a slot by accident is a run for the wrong time.
    scheduled_for: StrictStr | None = None

    @field_validator("scheduled_for")
    @classmethod
    def _an_instant(cls, text: str | None) -> str | None:
        if text is not None:
            parse_instant(text)
        return text

    @property
    def instant(self) -> datetime | None:
        return None if self.scheduled_for is None else parse_instant(self.scheduled_for)


#: Characters of YYYY-MM-DD: where a date-time separator may be a space.
DATE_LENGTH = 10


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with an offset, whose slot exists; ValueError otherwise. Python
    3.11's fromisoformat also takes whitespace before the offset ("10:00:00 Z"): no
    whitespace is allowed but the date-time separator."""
    try:
        if any(char.isspace() for at, char in enumerate(text) if at != DATE_LENGTH):
            raise ValueError
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"a time without an offset is ambiguous: {text!r}")
    try:
        slot_of(instant)
    except OverflowError:
        raise ValueError(f"out of range: {text!r}") from None
    return instant


def should_retry(max_retries: int, retries: int, error: Exception) -> bool:
    """Retry a failed run, up to the job's retries; never a message Dramatiq could not even
    hand to the actor (a TypeError from its call: e.g. a keyword named `self`)."""
    return retries < max_retries and not isinstance(error, TypeError)


def parse_message(args: tuple, kwargs: dict) -> JobMessage:
    if args:
        raise InvalidMessage(f"positional arguments are not accepted: {len(args)} given")
    try:
        return JobMessage.model_validate(kwargs)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise InvalidMessage(f"invalid {where}: {first['msg']}") from None


def slot_and_trigger(request: JobMessage, message: dramatiq.Message | None) -> tuple:
    """Where the run's logical time comes from, and what triggered it."""
    options = message.options if message is not None else {}
    retried = bool(options.get("retries"))
    if request.instant is not None:
        return request.instant, "retry" if retried else "enqueued"
    if "scheduled_at" in options:
        if not isinstance(options["scheduled_at"], str):
            raise InvalidMessage(f"bad scheduled_at: {options['scheduled_at']!r}")
        try:
            return parse_instant(options["scheduled_at"]), "retry" if retried else "schedule"
        except ValueError as error:
            raise InvalidMessage(f"bad scheduled_at: {error}") from None
    return datetime.now(UTC), "enqueued"


def scheduler_timezone():
    """APP_TIMEZONE, for periodiq: its first look at a schedule boots the scheduler."""
    from workers.engine.boot import boot

    return (runtime.current() if runtime.booted() else boot("scheduler")).settings.timezone


def job_actor(job: Job, broker: dramatiq.Broker) -> dramatiq.Actor:
    """The Dramatiq actor of `job`, declared on `broker` from its row in the job table."""

    def perform(*args: Any, **kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        scheduled_for, trigger = slot_and_trigger(parse_message(args, kwargs), message)
        current = runtime.current()
        with current.pool.connection() as conn:
            schema_version(conn)  # never a run on a schema db init has not finished
            outcome = run_job(conn, job, scheduled_for, current.run_options(), trigger=trigger,
                              message_id=message.message_id if message else None)
        if outcome.status is Status.FAILED:
            raise JobFailed(f"{job.name} {outcome.scheduled_for.isoformat()}: "
                            f"{outcome.error}") from outcome.exception

    perform.__name__ = perform.__qualname__ = job.name
    return dramatiq.actor(
        perform,
        broker=broker,
        actor_name=job.name,
        queue_name=job.queue,
        periodic=Periodic(job.cron, scheduler_timezone),
        time_limit=int(job.time_limit.total_seconds() * 1000) + TIME_LIMIT_MARGIN_MS,
        max_retries=job.max_retries,
        retry_when=partial(should_retry, job.max_retries),
        min_backoff=MIN_BACKOFF_MS,
        max_backoff=MAX_BACKOFF_MS,
        throws=(InvalidMessage,),
    )


def declare_actors(jobs: Iterable[Job], broker: dramatiq.Broker) -> dict[str, dramatiq.Actor]:
    """An actor for each job, by name."""
    return {job.name: job_actor(job, broker) for job in jobs}
