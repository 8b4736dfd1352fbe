"""Work functions of the Saathii jobs that are not built yet (issue #3: per-minute billing,
presence, call cleanup, badges, log rotation). Each one reads what its job will act on
and reports it, writing nothing, so the platform runs every job end to end meanwhile."""

import psycopg

from workers.runs import RunContext


def _count(conn: psycopg.Connection, sql: str, params: dict | None = None) -> int:
    return conn.execute(sql, params or {}).fetchone()["n"]


def coin_deduction(conn: psycopg.Connection, run: RunContext) -> dict:
    return {"calls_seen": _count(conn, "SELECT count(*) AS n FROM user_calls"
                                       " WHERE status = 'ongoing'"),
            "minutes_charged": 0}


def presence_cleanup(conn: psycopg.Connection, run: RunContext) -> dict:
    return {"online_users": _count(conn, "SELECT count(*) AS n FROM user_status"
                                         " WHERE is_online")}


def call_cleanup(conn: psycopg.Connection, run: RunContext) -> dict:
    return {"ongoing_calls": _count(conn, "SELECT count(*) AS n FROM user_calls"
                                          " WHERE status = 'ongoing'")}


def badge_assignment(conn: psycopg.Connection, run: RunContext) -> dict:
    return {"date": run.local_time.date().isoformat(),
            "total_listeners": _count(conn, "SELECT count(*) AS n FROM user_roles"
                                            " WHERE role = 'listener' AND active")}


def log_rotation(conn: psycopg.Connection, run: RunContext) -> dict:
    return {"job_runs": _count(conn, "SELECT count(*) AS n FROM job_runs")}
