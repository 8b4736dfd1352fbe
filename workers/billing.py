"""Per-minute billing: charge every owed minute of every ongoing call, end the calls that
can go no further, settle every ended call once. The rules are the SQL of db/billing.sql;
this module runs them in order, in one transaction, and reports what they did.

Functions take a connection and the logical time of the tick; they never read the clock.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
from redis import Redis

from workers import events
from workers.db import queries
from workers.runs import RunContext

#: Call hashes written to Redis per round trip.
REDIS_BATCH = 10_000


@dataclass
class Tick:
    """What one billing tick did."""

    calls_seen: int = 0
    minutes_charged: int = 0
    coins_charged: int = 0
    #: coins_spent of each call charged and still ongoing, for its Redis hash.
    charged: dict[int, int] = field(default_factory=dict)
    #: The calls ended, as returned by the end_* queries.
    ended: list[dict] = field(default_factory=list)
    calls_settled: int = 0
    money_earned: Decimal = Decimal("0.00")

    def result(self) -> dict:
        reasons = Counter(call["end_reason"] for call in self.ended)
        return {"calls_seen": self.calls_seen, "minutes_charged": self.minutes_charged,
                "coins_charged": self.coins_charged, "calls_ended": dict(sorted(reasons.items())),
                "calls_settled": self.calls_settled, "money_earned": str(self.money_earned)}


def deduct_per_minute_coins(conn: psycopg.Connection, now: datetime, *, timezone: ZoneInfo,
                            heartbeat_timeout: timedelta, end_expired: bool = False) -> Tick:
    """One billing tick at logical time `now`. With `end_expired`, calls whose busy_until
    passed are ended too (call_cleanup's safety net). Runs in a transaction of its own, or
    as a savepoint of the caller's."""
    return _tick(conn, now, timezone=timezone, heartbeat_timeout=heartbeat_timeout,
                 end_expired=end_expired)


def end_call(conn: psycopg.Connection, call_id: int, now: datetime, *, timezone: ZoneInfo,
             heartbeat_timeout: timedelta) -> Tick:
    """End one call at logical time `now` as a party asked (the API's hang-up): its owed
    minutes are charged first, as a tick would; it ends 'completed', or 'dropped' for
    insufficient coins (or a silent party) if those minutes could not all be paid; then it
    is settled and its parties freed. Ending a call that already ended does nothing."""
    return _tick(conn, now, timezone=timezone, heartbeat_timeout=heartbeat_timeout,
                 calls=[call_id], hang_up=True)


def _tick(conn: psycopg.Connection, now: datetime, *, timezone: ZoneInfo,
          heartbeat_timeout: timedelta, calls: list[int] | None = None,
          end_expired: bool = False, hang_up: bool = False) -> Tick:
    sql = queries("billing.sql")
    params = {"now": now, "heartbeat": heartbeat_timeout, "timezone": timezone.key,
              "calls": calls}
    tick = Tick()
    with conn.transaction():
        tick.calls_seen = conn.execute(sql["lock_ongoing_calls"], params).fetchone()["calls"]
        conn.execute(sql["lock_callers_wallets"], params)
        charged = conn.execute(sql["charge_owed_minutes"], params).fetchone()
        tick.minutes_charged = charged["minutes_charged"]
        tick.coins_charged = charged["coins_charged"]
        tick.ended = conn.execute(sql["end_calls"], params).fetchall()
        if end_expired:
            tick.ended += conn.execute(sql["end_expired_calls"], params).fetchall()
        if hang_up:
            tick.ended += conn.execute(sql["end_calls_as_asked"], params).fetchall()
        ended_ids = {call["call_id"] for call in tick.ended}
        tick.charged = {call_id: coins for call_id, coins in zip(
            charged["charged_call_ids"], charged["charged_coins_spent"], strict=True)
            if call_id not in ended_ids}
        settled = settle_ended_calls(conn, now, timezone)
        tick.calls_settled, tick.money_earned = settled["calls_settled"], settled["money_earned"]
        parties = sorted({user for call in tick.ended
                          for user in (call["user_id"], call["listener_id"])})
        conn.execute(sql["free_parties"], {"users": parties})
    return tick


def settle_ended_calls(conn: psycopg.Connection, now: datetime, timezone: ZoneInfo) -> dict:
    """Pay the listener of every ended, unsettled call, exactly once."""
    sql = queries("billing.sql")
    conn.execute(sql["open_listener_wallets"])
    return conn.execute(sql["settle_ended_calls"],
                        {"now": now, "timezone": timezone.key}).fetchone()


def publish_tick(client: Redis, tick: Tick) -> None:
    """The Redis side of a committed tick: each charged call's hash holds its coins_spent,
    each ended call's hash is gone and its end is announced."""
    charged = list(tick.charged.items())
    for start in range(0, len(charged), REDIS_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for call_id, coins_spent in charged[start:start + REDIS_BATCH]:
                pipe.hset(events.call_key(call_id), "coins_spent", coins_spent)
            pipe.execute()
    if tick.ended:
        client.delete(*(events.call_key(call["call_id"]) for call in tick.ended))
        events.publish(client, events.CALL_CHANNEL, (
            {"event": "call_ended", "call_id": call["call_id"], "reason": call["end_reason"],
             "ended_at": call["end_time"].isoformat(), "coins_spent": call["coins_spent"],
             "caller_id": call["user_id"], "listener_id": call["listener_id"]}
            for call in tick.ended))


def coin_deduction(conn: psycopg.Connection, run: RunContext) -> dict:
    """The coin_deduction job: one billing tick at the run's slot."""
    tick = deduct_per_minute_coins(
        conn, run.scheduled_for, timezone=run.timezone,
        heartbeat_timeout=timedelta(seconds=int(run.params["heartbeat_timeout_seconds"])))
    if run.redis is not None:
        run.after_commit(lambda: publish_tick(run.redis, tick))
    return tick.result()
