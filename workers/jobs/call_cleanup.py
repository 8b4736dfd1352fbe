"""call_cleanup, every 10 minutes: the safety net behind billing. It runs a billing tick
that also ends the calls whose time ran out (a party's busy_until passed), so every call
that should be over is ended, charged up to its end and settled; and it removes the Redis
hashes of calls that are no longer ongoing (left behind when an after-commit Redis write
failed, or by the API)."""

import logging

import psycopg
from redis import Redis

from workers.app import events
from workers.engine import redis_client
from workers.engine.db import queries
from workers.engine.runs import RunContext
from workers.errors import RedisUnavailable
from workers.jobs.coin_deduction import Params as Params  # coin_deduction's parameters
from workers.jobs.coin_deduction import deduct_per_minute_coins, publish_tick

log = logging.getLogger(__name__)

#: Keys asked of Redis per SCAN step.
SCAN_COUNT = 1_000


def stale_call_keys(conn: psycopg.Connection, client: Redis) -> list[str]:
    """The call:{id} hashes in Redis whose call is not ongoing. Redis unreachable yields
    nothing (and a warning): it must never fail the run and undo its money."""
    try:
        with redis_client.failures_as_ours(redis_client.where(client)):
            ids = [int(key.split(b":", 1)[1]) for key in
                   client.scan_iter(match="call:*", count=SCAN_COUNT)
                   if key.split(b":", 1)[1].isdigit()]
    except RedisUnavailable as error:
        log.warning("call_cleanup: %s; stale call hashes left for next time", error)
        return []
    rows = conn.execute(queries("call_cleanup.sql")["calls_not_ongoing"], {"ids": ids})
    return [events.call_key(row["call_id"]) for row in rows]


def call_cleanup(conn: psycopg.Connection, run: RunContext) -> dict:
    """End, charge and settle every call that should be over at the run's slot; then
    repair Redis: the hashes of the calls the tick charged or ended, and stale ones."""
    tick = deduct_per_minute_coins(conn, run.scheduled_for, timezone=run.timezone,
                                   rules=run.params, end_expired=True)
    stale = stale_call_keys(conn, run.redis) if run.redis is not None else []

    def repair_redis() -> None:
        publish_tick(conn, run.redis, tick)
        if stale:
            run.redis.delete(*stale)

    if run.redis is not None:
        run.after_commit(repair_redis)
    return {**tick.result(), "stale_call_hashes": len(stale)}
