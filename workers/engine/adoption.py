"""The calls a first adoption held from billing (db/adoption.sql, workers.engine.schema):
listing them, and ending them when an operator decides to: at their parties' last
sighting, charged nothing more."""

import psycopg

from workers.engine.db import queries


def held_calls(conn: psycopg.Connection) -> list[dict]:
    """The held calls still 'ongoing', oldest first."""
    return conn.execute(queries("adoption.sql")["held_calls"]).fetchall()


def end_held_calls(conn: psycopg.Connection) -> int:
    """End every held call still 'ongoing' (uncharged), in one transaction; how many."""
    with conn.transaction():
        return conn.execute(queries("adoption.sql")["end_held_calls"]).fetchone()["ended"]
