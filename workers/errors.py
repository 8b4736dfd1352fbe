"""Every error this project raises on purpose. Driver errors become these at one boundary
each (workers.engine.db for psycopg, workers.engine.redis_client for redis), `from` their
cause, so users see one clear line and logs keep the cause.

    WorkersError
     +-- Unavailable              a service cannot be reached (CLI exit 3)
     |    +-- DatabaseUnavailable
     |    +-- RedisUnavailable
     +-- SchemaMissing            the database has no (or an older) schema: run `db init`
     +-- AdoptionRefused          db init cannot apply the schema to what the database holds
     +-- UsageError               bad input from a user or a message (CLI exit 2, no retry)
     |    +-- BadSetting          an environment variable the settings refuse
     |    +-- InvalidParams       job parameters (settings, overrides) the job's model refuses
     |    +-- InvalidMessage      a message an actor cannot run: dead-lettered, never retried
     +-- NotBooted                the runtime was used before this process booted
     +-- UnreadableArchive        log_rotation found a .log.gz it cannot read
     +-- JobFailed                a run failed: Dramatiq retries it per the job table

JobFailed is also Dramatiq's Retry. The run contract has already recorded and reported the
failure (its finished hook: the log, Sentry) by the time the actor raises it, so Dramatiq
must neither log it again nor hand it to Sentry a second time; Retry is the exception
Dramatiq retries (per the actor's retries) without doing either.
"""

from dramatiq.errors import Retry


class WorkersError(Exception):
    """Base class of every error this project raises on purpose."""


class Unavailable(WorkersError):
    """A service the workers need cannot be reached."""


class DatabaseUnavailable(Unavailable):
    pass


class RedisUnavailable(Unavailable):
    pass


class SchemaMissing(WorkersError):
    """The database has no saathii-workers schema, or an older one."""


class AdoptionRefused(WorkersError):
    """db init stopped: rows that break a money constraint, or locks it could not get."""


class UsageError(WorkersError):
    """Bad input: a wrong job name, a malformed time, an invalid message payload."""


class BadSetting(UsageError):
    """An environment variable the settings refuse; the message names it and why."""


class InvalidParams(UsageError):
    """Parameters a job's model refuses: an override in job_settings, or a setting."""


class InvalidMessage(UsageError):
    """A message the actor cannot run: dead-lettered, never retried."""


class NotBooted(WorkersError):
    """Something needs the process's runtime (pool, Redis client, hooks) before it booted."""


class UnreadableArchive(WorkersError):
    """A .log.gz that is not valid gzip sits beside a .log to compress into it."""


class JobFailed(WorkersError, Retry):
    """The run failed and was recorded and reported; raised so Dramatiq retries it."""
