"""call_cleanup: the safety net behind billing. Every 10 minutes it runs a billing tick that
also ends the calls whose time ran out (a party's busy_until passed), so every call that
should be over is ended, charged up to its end and settled; and it removes the Redis
hashes of calls that are no longer ongoing (left behind when an after-commit Redis write
failed, or by the API)."""

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from redis import Redis, RedisError

from workers import events
from workers.billing import Tick, deduct_per_minute_coins, publish_tick
from workers.db import queries
from workers.runs import RunContext

log = logging.getLogger(__name__)

#: Keys asked of Redis per SCAN step.
SCAN_COUNT = 1_000


def cleanup_expired_calls(conn: psycopg.Connection, now: datetime, *, timezone: ZoneInfo,
                          heartbeat_timeout: timedelta) -> Tick:
    """End, charge and settle every call that should be over at logical time `now`."""
    return deduct_per_minute_coins(conn, now, timezone=timezone,
                                   heartbeat_timeout=heartbeat_timeout, end_expired=True)


def stale_call_keys(conn: psycopg.Connection, client: Redis) -> list[str]:
    """The call:{id} hashes in Redis whose call is not ongoing. A Redis failure is logged
    and yields nothing: it must never fail the run and undo its money."""
    try:
        ids = [int(key.split(b":", 1)[1]) for key in
               client.scan_iter(match="call:*", count=SCAN_COUNT)
               if key.split(b":", 1)[1].isdigit()]
    except RedisError:
        log.warning("call_cleanup: Redis unreachable, stale call hashes left for next time")
        return []
    rows = conn.execute(queries("billing.sql")["calls_not_ongoing"], {"ids": ids}).fetchall()
    return [events.call_key(row["call_id"]) for row in rows]


def call_cleanup(conn: psycopg.Connection, run: RunContext) -> dict:
    """The call_cleanup job."""
    tick = cleanup_expired_calls(
        conn, run.scheduled_for, timezone=run.timezone,
        heartbeat_timeout=timedelta(seconds=int(run.params["heartbeat_timeout_seconds"])))
    stale = stale_call_keys(conn, run.redis) if run.redis is not None else []

    def repair_redis() -> None:
        publish_tick(conn, run.redis, tick)
        if stale:
            run.redis.delete(*stale)

    if run.redis is not None:
        run.after_commit(repair_redis)
    return {**tick.result(), "stale_call_hashes": len(stale)}
