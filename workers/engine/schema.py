"""`db init`: apply db/schema.sql to a live database beside the Saathii API, never making
one of its queries wait long (see the head of db/schema.sql), and adopt what it holds.

- Before anything is applied, every money CHECK the schema would add is counted against
  the rows there are: a row that breaks one stops db init with one line naming the table,
  the constraint and how many rows, and nothing is changed.
- Then the script runs one statement at a time, each its own transaction, under a short
  lock_timeout: a statement that cannot have its lock at once gives up, lets the API's
  queries through, and is tried again a moment later.
- The first adoption of a database (one without our schema yet) holds from billing the
  calls still 'ongoing' whose parties have been silent past the heartbeat timeout: the
  backlog they stand for is the operator's to decide (`python -m workers adopted-calls`).
"""

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from workers.engine.db import queries, schema_version, sql_dir
from workers.engine.jobs import LOCK_NAMESPACE
from workers.errors import AdoptionRefused
from workers.settings import Settings

#: Advisory lock of `db init` (jobs' lock ids start at 1): two replicas starting at once
#: apply the schema one after the other.
SCHEMA_LOCK_ID = 0
#: How long a statement waits for its table lock before it gives up and tries again: an
#: API query queued behind it waits at most about this long.
LOCK_TIMEOUT = "500ms"
#: Attempts of a statement whose lock is busy, and the pause after each (seconds).
ATTEMPTS = 60
PAUSE = (0.1, 2.0)

_CHECK = re.compile(r"add_constraint\('(\w+)',\s*'(\w+)',\s*'CHECK \(((?:[^']|'')*)\)'\)", re.S)
_CONCURRENT_INDEX = re.compile(r"CREATE (?:UNIQUE )?INDEX CONCURRENTLY IF NOT EXISTS (\w+)")


@dataclass(frozen=True)
class Adoption:
    """The calls a first adoption held from billing."""

    calls: int
    oldest: datetime | None
    coins_at_stake: int


@dataclass(frozen=True)
class Applied:
    version: int
    #: What the first adoption of this database held; None when it was not one.
    adoption: Adoption | None


def apply_schema(conn: psycopg.Connection, settings: Settings | None = None) -> Applied:
    """Apply db/schema.sql (idempotent, additive) on `conn` (autocommit); AdoptionRefused
    naming what the database holds that the schema refuses."""
    settings = settings or Settings(_env_file=None)
    script = (sql_dir() / "schema.sql").read_text()
    conn.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, SCHEMA_LOCK_ID])
    try:
        first = conn.execute("SELECT to_regclass('schema_version') IS NULL"
                             " AND to_regclass('user_calls') IS NOT NULL AS first").fetchone()
        refuse_bad_rows(conn, script)
        for statement in statements(script):
            run(conn, statement)
        adoption = hold_adopted_calls(conn, settings) if first["first"] else None
    finally:
        conn.execute("SET lock_timeout = DEFAULT")
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, SCHEMA_LOCK_ID])
    return Applied(version=schema_version(conn), adoption=adoption)


def refuse_bad_rows(conn: psycopg.Connection, script: str) -> None:
    """AdoptionRefused when existing rows break a CHECK the script would add."""
    for table, name, check in _CHECK.findall(script):
        present = conn.execute(
            "SELECT to_regclass(%(table)s) IS NOT NULL AS table_there,"
            " EXISTS (SELECT 1 FROM pg_constraint WHERE conname = %(name)s"
            "         AND conrelid = to_regclass(%(table)s)) AS constraint_there",
            {"table": table, "name": name}).fetchone()
        if not present["table_there"] or present["constraint_there"]:
            continue
        condition = check.replace("''", "'")
        try:
            bad = conn.execute(f"SELECT count(*) AS n FROM {table} WHERE NOT ({condition})"
                               ).fetchone()["n"]
        except psycopg.errors.UndefinedColumn:
            continue  # a column the script adds: no row can break it yet
        if bad:
            raise AdoptionRefused(
                f"{table}: {bad} row{'s' if bad > 1 else ''} break{'' if bad > 1 else 's'}"
                f" {name} ({condition}): fix them, then run db init again; nothing was"
                " applied")


def statements(script: str) -> list[str]:
    """The script's statements, split at semicolons outside quotes, dollar quotes and
    comments."""
    found, start, i = [], 0, 0
    while i < len(script):
        char = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end == -1 else end + 1
        elif char == "'":
            i = script.index("'", i + 1) + 1
            while script.startswith("'", i):  # '' inside a string
                i = script.index("'", i + 1) + 1
        elif char == "$" and (tag := re.match(r"\$\w*\$", script[i:])):
            i = script.index(tag.group(), i + len(tag.group())) + len(tag.group())
        elif char == ";":
            found.append(script[start:i].strip())
            start = i = i + 1
        else:
            i += 1
    found.append(script[start:].strip())
    return [statement for statement in found if _code(statement)]


def _code(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines()
                     if not line.strip().startswith("--")).strip()


def run(conn: psycopg.Connection, statement: str) -> None:
    """One statement, in a transaction of its own, tried again while its lock is busy."""
    index = _CONCURRENT_INDEX.search(statement)
    # CREATE INDEX CONCURRENTLY never blocks writes, and waits for old transactions
    # rather than locks: it is left to wait.
    conn.execute(f"SET lock_timeout = '{'0' if index else LOCK_TIMEOUT}'")
    if index:
        _drop_if_invalid(conn, index.group(1))
    pause = PAUSE[0]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            conn.execute(statement)
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == ATTEMPTS:
                raise AdoptionRefused(
                    f"db init gave up after {ATTEMPTS} tries: the API's queries kept a lock"
                    f" it needs ({_code(statement).splitlines()[0][:80]}); run it again at a"
                    " quieter time") from None
            time.sleep(pause)
            pause = min(pause * 2, PAUSE[1])
        except psycopg.errors.IntegrityError as error:
            raise AdoptionRefused(f"db init stopped: {str(error).splitlines()[0]}") from None


def _drop_if_invalid(conn: psycopg.Connection, name: str) -> None:
    """An index an interrupted CREATE INDEX CONCURRENTLY left invalid is built again."""
    invalid = conn.execute("SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s)"
                           " AND NOT indisvalid", [name]).fetchone()
    if invalid:
        conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


def hold_adopted_calls(conn: psycopg.Connection, settings: Settings) -> Adoption:
    """Hold from billing the calls left 'ongoing' with silent parties (see adoption.sql)."""
    row = conn.execute(queries("adoption.sql")["hold_adopted_calls"], {
        "heartbeat": timedelta(seconds=settings.heartbeat_timeout_seconds),
        "slack": timedelta(seconds=settings.heartbeat_slack_seconds),
        "max_minutes": settings.max_call_minutes}).fetchone()
    return Adoption(calls=row["calls"], oldest=row["oldest"], coins_at_stake=row["coins"])
