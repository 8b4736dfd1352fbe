"""PostgreSQL access: connections, the named SQL of db/, and the boundary where psycopg's
errors become our own.

All SQL lives in .sql files under db/ (installed as the package `workers.sql`). A file
holds named queries, each introduced by a `-- name: NAME` line and a comment saying
the rule it implements.
"""

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from workers.errors import DatabaseUnavailable, SchemaMissing

#: How long to wait for a connection to be established (seconds).
CONNECT_TIMEOUT = 5
#: libpq TCP keepalives, so a partitioned peer is noticed and its locks released (seconds).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}
#: The schema version db/schema.sql records; the code expects at least this one.
SCHEMA_VERSION = 12
#: Connections a worker process keeps for its actor threads.
POOL_MAX_SIZE = 10

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """db/ in a source checkout; the installed copy (package workers.sql) otherwise."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "db", package / "sql"):
        if (candidate / "schema.sql").is_file():
            return candidate
    raise FileNotFoundError("db/schema.sql not found next to the workers package")


@functools.cache
def queries(filename: str) -> dict[str, str]:
    """The named queries of db/FILENAME, by name."""
    text = (sql_dir() / filename).read_text()
    parts = _NAME_LINE.split(text)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


def describe_target(conninfo: str) -> str:
    """host:port/dbname of a conninfo, for messages (never the password)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def connect(conninfo: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One connection, or DatabaseUnavailable naming where and why."""
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row,
                               connect_timeout=CONNECT_TIMEOUT,
                               application_name="saathii-workers", **KEEPALIVES)
    except psycopg.OperationalError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[0] if lines else "unreachable"
        raise DatabaseUnavailable(
            f"database unreachable at {describe_target(conninfo)}: {reason}") from error


class Pool:
    """A per-process connection pool, opened on first use and reopened after a fork
    (Dramatiq's worker processes import the broker module before forking)."""

    def __init__(self, conninfo: str, *, max_size: int = POOL_MAX_SIZE):
        self.conninfo = conninfo
        self.max_size = max_size
        self._pool: ConnectionPool | None = None
        self._pid: int | None = None

    def _open(self) -> ConnectionPool:
        if self._pool is None or self._pid != os.getpid():
            self._pool = ConnectionPool(
                self.conninfo, min_size=1, max_size=self.max_size, open=False,
                kwargs={"autocommit": True, "row_factory": dict_row,
                        "connect_timeout": CONNECT_TIMEOUT,
                        "application_name": "saathii-workers", **KEEPALIVES},
                check=ConnectionPool.check_connection, name="saathii-workers")
            self._pool.open(wait=False)
            self._pid = os.getpid()
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in autocommit mode (callers open transactions explicitly). The pool
        rolls back one returned mid-transaction, releasing its transaction locks."""
        pool = self._open()
        try:
            conn = pool.getconn(timeout=CONNECT_TIMEOUT * 2)
        except PoolTimeout as error:
            raise DatabaseUnavailable(
                f"database unreachable at {describe_target(self.conninfo)}") from error
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
        self._pool = None


def schema_version(conn: psycopg.Connection) -> int:
    """The highest applied schema version; SchemaMissing when `db init` never ran."""
    try:
        row = conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
    except psycopg.errors.UndefinedTable:
        if not conn.autocommit:
            conn.rollback()
        raise SchemaMissing(
            "the database has no saathii-workers schema: run `python -m workers db init`"
        ) from None
    version = row["v"] or 0
    if version < SCHEMA_VERSION:
        raise SchemaMissing(f"the database schema is version {version}, these workers need "
                            f"{SCHEMA_VERSION}: run `python -m workers db init`")
    return version
