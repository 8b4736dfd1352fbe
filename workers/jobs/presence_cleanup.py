"""presence_cleanup, every 5 minutes: users whose heartbeat stopped go offline, and come
back online when they are seen again; busy states whose time is up end (unless the user is
on a live call); and the API hears of each change through Redis.

The functions take the run's logical time, never the clock; the SQL and its rules are in
db/presence_cleanup.sql.
"""

from datetime import datetime

import psycopg
from pydantic import Field

from workers.app.events import PRESENCE_CHANNEL, publish
from workers.engine.db import queries
from workers.engine.jobs import JobParams
from workers.engine.runs import RunContext
from workers.settings import DEFAULT_PRESENCE_INACTIVE_MINUTES

#: A user not seen for this long is offline (minutes); the seed service's default.
INACTIVE_MINUTES = DEFAULT_PRESENCE_INACTIVE_MINUTES


class Params(JobParams):
    #: A user not seen for this long is marked offline (minutes; PRESENCE_INACTIVE_MINUTES).
    presence_inactive_minutes: int = Field(INACTIVE_MINUTES, ge=1)


def mark_inactive_users_offline(conn: psycopg.Connection, now: datetime,
                                inactive_minutes: int = INACTIVE_MINUTES) -> list[int]:
    """Mark offline every online user not seen for more than `inactive_minutes` before
    `now` (or never seen); the ids marked, ascending."""
    if inactive_minutes < 1:
        raise ValueError(f"inactive_minutes must be at least 1, not {inactive_minutes}")
    rows = conn.execute(queries("presence_cleanup.sql")["mark_inactive_users_offline"],
                        {"now": _instant(now), "inactive_minutes": inactive_minutes})
    return [row["user_id"] for row in rows]


def bring_back_online(conn: psycopg.Connection, now: datetime,
                      inactive_minutes: int = INACTIVE_MINUTES) -> list[int]:
    """Online again every user this job set offline who has been seen since, within
    `inactive_minutes` of `now`; forget the mark of users online again by login. The ids
    brought back, ascending."""
    sql = queries("presence_cleanup.sql")
    rows = conn.execute(sql["back_online"], {"now": _instant(now),
                                             "inactive_minutes": inactive_minutes}).fetchall()
    conn.execute(sql["forget_offline_marks"])
    return [row["user_id"] for row in rows]


def cleanup_expired_busy_status(conn: psycopg.Connection, now: datetime) -> list[int]:
    """End every busy state that expired before `now` (busy_until, else the API's
    wait_time), except for users on an ongoing call; the ids freed, ascending."""
    rows = conn.execute(queries("presence_cleanup.sql")["cleanup_expired_busy_status"],
                        {"now": _instant(now)})
    return [row["user_id"] for row in rows]


def get_online_users_count(conn: psycopg.Connection) -> int:
    return conn.execute(queries("presence_cleanup.sql")["online_users_count"]).fetchone()["n"]


def presence_cleanup(conn: psycopg.Connection, run: RunContext) -> dict:
    """The presence_cleanup job: both clean-ups at the run's logical time, then, once they
    are committed, one publish of what changed on PRESENCE_CHANNEL."""
    now, minutes = run.scheduled_for, run.params.presence_inactive_minutes
    offline = mark_inactive_users_offline(conn, now, minutes)
    online = bring_back_online(conn, now, minutes)
    freed = cleanup_expired_busy_status(conn, now)
    events = ([_event("offline", user_id, now) for user_id in offline]
              + [_event("online", user_id, now) for user_id in online]
              + [_event("not_busy", user_id, now) for user_id in freed])
    if events and run.redis is not None:
        client = run.redis
        run.after_commit(lambda: publish(client, PRESENCE_CHANNEL, events))
    return {"marked_offline": len(offline), "back_online": len(online),
            "busy_cleared": len(freed), "online_users": get_online_users_count(conn)}


def _event(name: str, user_id: int, at: datetime) -> dict:
    return {"event": name, "user_id": user_id, "at": at.isoformat()}


def _instant(now: datetime) -> datetime:
    """`now` as an instant: a naive time would be read in the session's TimeZone, the
    original system's naive-UTC defect."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"the logical time must carry a timezone: {now.isoformat()}")
    return now
