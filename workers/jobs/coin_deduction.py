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
from pydantic import Field, model_validator
from redis import Redis

from workers.app import events
from workers.engine.db import queries
from workers.engine.jobs import EVERYTHING, JobParams, Shard
from workers.engine.runs import RunContext
from workers.settings import (
    DEFAULT_HEARTBEAT_SLACK,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_CALL_MINUTES,
)

#: Rows read from PostgreSQL and written to Redis per round trip, after the commit.
REDIS_BATCH = 10_000
#: Memory of the tick's sorts and hashes (PostgreSQL's work_mem, for its transaction).
WORK_MEM = "64MB"


class Params(JobParams):
    """The billing rules (db/schema.sql, ongoing_calls_at): the same for every tick, the
    API's hang-up (workers.app.end_call) and call_cleanup."""

    #: A call whose caller or listener has not been seen for this long is decided silent
    #: and ended (seconds; HEARTBEAT_TIMEOUT_SECONDS): when we decide, not what is charged.
    heartbeat_timeout_seconds: int = Field(DEFAULT_HEARTBEAT_TIMEOUT, ge=10)
    #: A minute is owed if its parties were seen no longer than this before it started,
    #: and a silent call ends this long after their last sighting (seconds;
    #: HEARTBEAT_SLACK_SECONDS): at most one heartbeat interval of the apps.
    heartbeat_slack_seconds: int = Field(DEFAULT_HEARTBEAT_SLACK, ge=1)
    #: A call ends once it is this long, and owes no minute after (minutes;
    #: MAX_CALL_MINUTES): a stuck 'ongoing' row never drains a wallet.
    max_call_minutes: int = Field(DEFAULT_MAX_CALL_MINUTES, ge=1)

    @model_validator(mode="after")
    def _slack_within_timeout(self) -> "Params":
        if self.heartbeat_slack_seconds > self.heartbeat_timeout_seconds:
            raise ValueError(f"heartbeat_slack_seconds ({self.heartbeat_slack_seconds}) must"
                             f" not exceed heartbeat_timeout_seconds"
                             f" ({self.heartbeat_timeout_seconds})")
        return self

    def sql(self) -> dict:
        """The rules as the billing SQL takes them."""
        return {"heartbeat": timedelta(seconds=self.heartbeat_timeout_seconds),
                "slack": timedelta(seconds=self.heartbeat_slack_seconds),
                "max_minutes": self.max_call_minutes}


#: The rules with every default.
DEFAULT_RULES = Params()


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
    #: Calls the API ended that this tick charged up to their end and closed.
    api_calls_closed: int = 0
    #: The API's minute-1 spend rows this tick named with their calls.
    first_minutes_linked: int = 0
    calls_settled: int = 0
    #: Of the calls settled, those the API's own hang-up had paid already.
    paid_by_api: int = 0
    money_earned: Decimal = Decimal("0.00")

    def result(self) -> dict:
        """Counts and coins as integers, money (rupees) as an exact decimal string."""
        return {"calls_seen": self.calls_seen, "minutes_charged": self.minutes_charged,
                "coins_charged": self.coins_charged,
                "calls_ended": dict(sorted(self.end_reasons.items())),
                "api_calls_closed": self.api_calls_closed,
                "first_minutes_linked": self.first_minutes_linked,
                "calls_settled": self.calls_settled, "paid_by_api": self.paid_by_api,
                "money_earned": str(self.money_earned)}

    def params(self, **more) -> dict:
        return {"shard": self.shard.index, "shards": self.shard.count, "calls": self.calls,
                **more}


def deduct_per_minute_coins(conn: psycopg.Connection, now: datetime, *, timezone: ZoneInfo,
                            rules: Params = DEFAULT_RULES, end_expired: bool = False,
                            shard: Shard = EVERYTHING) -> Tick:
    """One billing tick at logical time `now` over the calls of `shard`. With
    `end_expired`, calls whose busy state expired are ended too (call_cleanup's safety
    net). Runs in a transaction of its own, or as a savepoint of the caller's."""
    return _tick(conn, now, Tick(shard=shard), timezone=timezone, rules=rules,
                 end_expired=end_expired)


def hang_up(conn: psycopg.Connection, call_id: int, now: datetime, *, timezone: ZoneInfo,
            rules: Params = DEFAULT_RULES) -> Tick:
    """The tick of one call that a party hung up at `now` (workers.app.calls.end_call)."""
    return _tick(conn, now, Tick(calls=[call_id]), timezone=timezone, rules=rules,
                 hang_up=True)


def _tick(conn: psycopg.Connection, now: datetime, tick: Tick, *, timezone: ZoneInfo,
          rules: Params, end_expired: bool = False, hang_up: bool = False) -> Tick:
    sql = queries("coin_deduction.sql")
    params = tick.params(now=now, timezone=timezone.key, work_mem=WORK_MEM, **rules.sql())
    with conn.transaction():
        conn.execute(sql["tick_settings"], params)
        tick.first_minutes_linked = conn.execute(sql["link_first_minutes"],
                                                 params).fetchone()["linked"]
        tick.calls_seen = conn.execute(sql["lock_calls"], params).fetchone()["calls"]
        conn.execute(sql["lock_callers_wallets"], params)
        charged = conn.execute(sql["charge_owed_minutes"], params).fetchone()
        tick.minutes_charged = charged["minutes_charged"]
        tick.coins_charged = charged["coins_charged"]
        tick.api_calls_closed = conn.execute(sql["close_api_ended_calls"], params).rowcount
        ended = conn.execute(sql["end_calls"], {**params, "end_expired": end_expired,
                                                "hang_up": hang_up}).fetchone()
        tick.ended.extend(ended["call_ids"])
        tick.end_reasons.update(ended["reasons"])
        settled = _settle(conn, params)
        tick.calls_settled, tick.money_earned = settled["calls_settled"], settled["money_earned"]
        tick.paid_by_api = settled["paid_by_api"]
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
                                   shard=run.job.shard, rules=run.params)
    if run.redis is not None:
        run.after_commit(lambda: publish_tick(conn, run.redis, tick))
    return tick.result()
