"""coin_deduction, every minute: one billing tick. Charge every owed minute of every
ongoing call, end the calls that can go no further, settle every ended call once. The rules
are the SQL of db/coin_deduction.sql; this module runs them in order, in one transaction,
and reports what they did. call_cleanup and the app's hang-up (workers.app.calls) run the
same tick with a rule more.

Functions take a connection and the logical time of the tick; they never read the clock.
"""

from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
from pydantic import Field
from redis import Redis

from workers.app import events
from workers.engine.db import queries
from workers.engine.jobs import EVERYTHING, JobParams, Shard
from workers.engine.runs import RunContext
from workers.settings import DEFAULT_HEARTBEAT_TIMEOUT

#: Rows read from PostgreSQL and written to Redis per round trip, after the commit.
REDIS_BATCH = 10_000
#: Memory of the tick's sorts and hashes (PostgreSQL's work_mem, for its transaction).
WORK_MEM = "64MB"


class Params(JobParams):
    #: A call whose caller or listener has not been seen for this long is ended, not
    #: charged (seconds; HEARTBEAT_TIMEOUT_SECONDS).
    heartbeat_timeout_seconds: int = Field(DEFAULT_HEARTBEAT_TIMEOUT, ge=10)

    @property
    def heartbeat_timeout(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_timeout_seconds)


@dataclass
class Tick:
    """What one billing tick did. It holds counts and the ids of the calls it ended, never
    the calls themselves: a worker's memory stays flat however many calls are live."""

    shard: Shard = EVERYTHING
    #: The calls it acted on (a hang-up's), or None for every call of the shard.
    calls: list[int] | None = None
    calls_seen: int = 0
    minutes_charged: int = 0
    coins_charged: int = 0
    #: Ids of the calls ended, and how many ended for each reason.
    ended: array = field(default_factory=lambda: array("q"))
    end_reasons: Counter = field(default_factory=Counter)
    calls_settled: int = 0
    money_earned: Decimal = Decimal("0.00")

    def result(self) -> dict:
        return {"calls_seen": self.calls_seen, "minutes_charged": self.minutes_charged,
                "coins_charged": self.coins_charged,
                "calls_ended": dict(sorted(self.end_reasons.items())),
                "calls_settled": self.calls_settled, "money_earned": str(self.money_earned)}

    def params(self, **more) -> dict:
        return {"shard": self.shard.index, "shards": self.shard.count, "calls": self.calls,
                **more}


def deduct_per_minute_coins(conn: psycopg.Connection, now: datetime, *, timezone: ZoneInfo,
                            heartbeat_timeout: timedelta, end_expired: bool = False,
                            shard: Shard = EVERYTHING) -> Tick:
    """One billing tick at logical time `now` over the calls of `shard`. With
    `end_expired`, calls whose busy_until passed are ended too (call_cleanup's safety
    net). Runs in a transaction of its own, or as a savepoint of the caller's."""
    return _tick(conn, now, Tick(shard=shard), timezone=timezone,
                 heartbeat_timeout=heartbeat_timeout, end_expired=end_expired)


def hang_up(conn: psycopg.Connection, call_id: int, now: datetime, *, timezone: ZoneInfo,
            heartbeat_timeout: timedelta) -> Tick:
    """The tick of one call that a party hung up at `now` (workers.app.calls.end_call)."""
    return _tick(conn, now, Tick(calls=[call_id]), timezone=timezone,
                 heartbeat_timeout=heartbeat_timeout, hang_up=True)


def _tick(conn: psycopg.Connection, now: datetime, tick: Tick, *, timezone: ZoneInfo,
          heartbeat_timeout: timedelta, end_expired: bool = False,
          hang_up: bool = False) -> Tick:
    sql = queries("coin_deduction.sql")
    params = tick.params(now=now, heartbeat=heartbeat_timeout, timezone=timezone.key,
                         work_mem=WORK_MEM)
    with conn.transaction():
        conn.execute(sql["tick_settings"], params)
        tick.calls_seen = conn.execute(sql["lock_ongoing_calls"], params).fetchone()["calls"]
        conn.execute(sql["lock_callers_wallets"], params)
        charged = conn.execute(sql["charge_owed_minutes"], params).fetchone()
        tick.minutes_charged = charged["minutes_charged"]
        tick.coins_charged = charged["coins_charged"]
        ended = conn.execute(sql["end_calls"], {**params, "end_expired": end_expired,
                                                "hang_up": hang_up}).fetchone()
        tick.ended.extend(ended["call_ids"])
        tick.end_reasons.update(ended["reasons"])
        settled = _settle(conn, params)
        tick.calls_settled, tick.money_earned = settled["calls_settled"], settled["money_earned"]
        conn.execute(sql["free_parties"], {"ended": list(tick.ended)})
    return tick


def _settle(conn: psycopg.Connection, params: dict) -> dict:
    sql = queries("coin_deduction.sql")
    conn.execute(sql["open_listener_wallets"], params)
    return conn.execute(sql["settle_ended_calls"], params).fetchone()


def publish_tick(conn: psycopg.Connection, client: Redis, tick: Tick) -> None:
    """The Redis side of a committed tick, read back from the database in batches: each
    ongoing call's hash holds its coins_spent, each ended call's hash is gone and its end
    is announced."""
    sql = queries("coin_deduction.sql")
    with conn.transaction(), conn.cursor(name="ongoing_coins_spent") as cursor:
        cursor.itersize = REDIS_BATCH
        cursor.execute(sql["ongoing_coins_spent"], tick.params())
        while rows := cursor.fetchmany(REDIS_BATCH):
            events.set_coins_spent(client, [(row["call_id"], row["coins_spent"]) for row in rows])
    for start in range(0, len(tick.ended), REDIS_BATCH):
        ids = list(tick.ended[start:start + REDIS_BATCH])
        calls = conn.execute(sql["ended_calls"], {"ended": ids}).fetchall()
        if not calls:
            continue
        client.delete(*(events.call_key(call["call_id"]) for call in calls))
        events.publish(client, events.CALL_CHANNEL, (
            {"event": "call_ended", "call_id": call["call_id"], "reason": call["end_reason"],
             "ended_at": call["end_time"].isoformat(), "coins_spent": call["coins_spent"],
             "caller_id": call["user_id"], "listener_id": call["listener_id"]}
            for call in calls))


def coin_deduction(conn: psycopg.Connection, run: RunContext) -> dict:
    """The coin_deduction job (or one shard of it): one billing tick at the run's slot."""
    tick = deduct_per_minute_coins(conn, run.scheduled_for, timezone=run.timezone,
                                   shard=run.job.shard,
                                   heartbeat_timeout=run.params.heartbeat_timeout)
    if run.redis is not None:
        run.after_commit(lambda: publish_tick(conn, run.redis, tick))
    return tick.result()
