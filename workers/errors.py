"""The project's own errors. Driver errors become these at one boundary (workers.db,
workers.broker), `from` their cause, so users see one clear line and logs keep the cause.

    WorkersError
     +-- Unavailable            a service cannot be reached
     |    +-- DatabaseUnavailable
     |    +-- RedisUnavailable
     +-- UsageError             bad input from a user or a message (CLI exit 2, no retry)
     +-- SchemaMissing          the database has no (or an older) schema: run `db init`
     +-- UnreadableArchive      log_rotation found a .log.gz it cannot read
"""


class WorkersError(Exception):
    """Base class of every error this project raises on purpose."""


class Unavailable(WorkersError):
    """A service the workers need cannot be reached."""


class DatabaseUnavailable(Unavailable):
    pass


class RedisUnavailable(Unavailable):
    pass


class UsageError(WorkersError):
    """Bad input: a wrong job name, a malformed time, an invalid message payload."""


class SchemaMissing(WorkersError):
    pass


class UnreadableArchive(WorkersError):
    """A .log.gz that is not valid gzip sits beside a .log to compress into it."""
