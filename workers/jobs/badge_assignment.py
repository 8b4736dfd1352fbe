"""badge_assignment, daily at 00:01 local: on local day D every active listener holds the
badge earned by the minutes they talked on D-1, which sets their pay per minute for D.

The rule and its day boundaries are in db/badge_assignment.sql; the day is the business's
local date, never the database server's.
"""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import psycopg

from workers.engine.db import queries
from workers.engine.runs import RunContext


def assign_daily_badges(conn: psycopg.Connection, day: date, timezone: ZoneInfo | str) -> dict:
    """Give every active listener without a badge for `day` the one earned on the day
    before (local days in `timezone`); the badges the active listeners hold for `day`
    afterwards, counted by level. Existing badges are kept: running a day twice is a no-op.
    A failure raises (the run records it), so `errors` is always 0."""
    if isinstance(day, datetime):  # its date would be the database session's, not ours
        raise TypeError(f"day must be a local date, not a datetime: {day.isoformat()}")
    sql = queries("badge_assignment.sql")
    params = {"day": day, "tz": str(timezone)}
    conn.execute(sql["assign_daily_badges"], params)
    conn.execute(sql["mark_badge_day"], params)
    counts = conn.execute(sql["badge_counts"], params).fetchone()
    return {**counts, "errors": 0}


def badge_assignment(conn: psycopg.Connection, run: RunContext) -> dict:
    """The badge_assignment job: the badges of the local day the run's slot falls on (the
    00:01 run awards today's from yesterday's calls; a backfill names its day's slot)."""
    day = run.local_time.date()
    return {"date": day.isoformat(), **assign_daily_badges(conn, day, run.timezone)}
