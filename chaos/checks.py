"""The run's verdict, from the database alone: the invariants of chaos/checks.sql, and a
description of what the run did (its summary_* queries).

All queries run in one read-only REPEATABLE READ transaction, so they judge one state.
"""

import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from workers.schedule import JOBS
from workers.settings import DEFAULT_HEARTBEAT_SLACK, DEFAULT_MAX_CALL_MINUTES

SQL_FILE = Path(__file__).with_name("checks.sql")
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
#: Violations listed in the summary per check (the count is always complete).
LISTED_PER_CHECK = 10


def queries() -> dict[str, str]:
    """The named queries of checks.sql, in file order."""
    parts = _NAME_LINE.split(SQL_FILE.read_text())[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


def judge(url: str, *, start: datetime, final: datetime, heartbeat: timedelta,
          timezone: str, slack: timedelta = timedelta(seconds=DEFAULT_HEARTBEAT_SLACK),
          max_minutes: int = DEFAULT_MAX_CALL_MINUTES,
          billing_jobs: list[str] | None = None) -> tuple[list[dict], dict]:
    """(violations, description). Each violation names its check and the rows' columns.
    The billing rules are the workers' (`heartbeat`, `slack`, `max_minutes`);
    `billing_jobs` are the names of the billing jobs (BILLING_SHARDS's, by default)."""
    params = {"start": start, "final": final, "heartbeat": heartbeat, "timezone": timezone,
              "slack": slack, "max_minutes": max_minutes,
              "billing_jobs": billing_jobs or billing_job_names()}
    violations, description = [], {}
    with psycopg.connect(url, row_factory=dict_row, connect_timeout=10) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        for name, sql in queries().items():
            rows = [{key: plain(value) for key, value in row.items()}
                    for row in conn.execute(sql, params).fetchall()]
            if name.startswith("summary_"):
                description[name.removeprefix("summary_")] = rows
            else:
                violations += [{"check": name, **row} for row in rows]
        conn.rollback()
    return violations, description


def billing_job_names() -> list[str]:
    """coin_deduction, or coin_deduction_0..K-1 with BILLING_SHARDS=K."""
    return [job.name for job in JOBS.values() if job.shard_locks is not None]


def listed(violations: list[dict]) -> list[dict]:
    """At most LISTED_PER_CHECK violations of each check, for the summary."""
    seen: dict[str, int] = {}
    shown = []
    for violation in violations:
        seen[violation["check"]] = seen.get(violation["check"], 0) + 1
        if seen[violation["check"]] <= LISTED_PER_CHECK:
            shown.append(violation)
    return shown


def plain(value):
    """A column value as JSON can carry it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    return value
