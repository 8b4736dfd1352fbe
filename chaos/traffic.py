"""The traffic generator: what Saathii's API does to the shared tables, on the logical clock.

`populate()` (run by the harness before the storm) makes the people: customers with a
wallet and a first coin purchase ('purchase' row), listeners with a wallet, every third
of them holding a badge (listener_badges) for each local day the run touches, so
settlement rates vary.

The generator (`python -m chaos.traffic --seed S <clock>`) then acts every quarter of a
logical minute until the clock reaches its end, as the API would:
- keeps `user_status.last_seen` fresh once a logical minute for everyone whose app is
  open; now and then someone goes silent for a few minutes (their calls then end by the
  heartbeat rule) and comes back;
- starts calls between free, present parties, exactly as the API does: in one
  transaction, the caller's wallet locked, balance >= rate checked, the call inserted with
  coins_spent = rate, one 'spend' row naming the call and call_minute 1, the wallet
  debited, both parties marked busy (a quarter of the calls with a busy_until, so some
  expire and call_cleanup ends them);
- hangs up calls when their planned length is up, with workers.app.end_call at the
  logical now, which charges the minutes started before the hang-up and settles the call.
  The logical now is read after the call's row is locked, so it is never earlier than a
  tick that already charged the call;
- tops up wallets that run low ('purchase' rows, the wallet updated first so that per
  wallet the ledger's row order is its commit order).
Low first purchases make calls run out of coins. Database errors (PostgreSQL restarted
under it, a deadlock) are counted, the connection is opened again, and it carries on.
At the end it prints its counts as one JSON line.

With `--api broken` or `--api fixed` it acts as the real Saathii API instead, on the API's
own database (chaos/saathii_api.sql, adopted by db init): its statements one by one,
without transactions (chaos.saathii_api), for registration, purchases, heartbeats (last_seen
only), starting a call (the debit, a spend row naming no call, the call, both parties busy
with a wait_time, the Redis hash with its TTL) and the hang-up: `broken` is its end route as
written, which fails on every call (the caller then closes the app: silent, now and then),
`fixed` the route with its one-line fix, which ends the call and pays the listener whole
rupees as coins. The API's purchase reads the balance and writes an absolute one: a tick
debiting in between would be lost (the API's race, not the workers'), so this traffic buys
only for customers with no call left to bill.
"""

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from contextlib import nullcontext
from datetime import date, datetime, timedelta
from decimal import Decimal

import psycopg
import redis
from psycopg.rows import dict_row

from chaos.clock import LogicalClock
from chaos.saathii_api import ApiError, SaathiiApi

log = logging.getLogger("chaos.traffic")

#: Coins a minute, as call_rate() in db/schema.sql says.
RATES = {"audio": 10, "video": 60}
VIDEO_SHARE = 0.2
#: First purchases: low ones run out within minutes (coins).
FIRST_PURCHASES = (30, 50, 80, 120, 200, 400, 800, 1500)
TOP_UPS = (50, 100, 200, 500)
#: Every BADGED_EVERY-th listener holds a badge on every day of the run.
BADGED_EVERY = 3
#: A step every this much of a logical minute.
STEP = timedelta(seconds=15)
#: Share of listeners the traffic tries to keep on a call.
TARGET_BUSY = 0.9
MAX_STARTS_PER_STEP = 3
START_PROBABILITY = 0.6
TOP_UP_PROBABILITY = 0.3
#: Chance, per logical minute and person, to go silent; and for how long (minutes).
SILENCE_PROBABILITY = 0.01
SILENCE_MINUTES = (3, 12)
#: Share of calls the API gives a busy_until, and how far ahead (minutes).
BUSY_UNTIL_SHARE = 0.25
BUSY_UNTIL_MINUTES = (3, 30)
#: As the real API whose end route fails: the share of callers who then close the app.
CLOSE_AFTER_FAILED_HANG_UP = 0.7
CONNECT_TIMEOUT = 2  # seconds
API_MODES = ("broken", "fixed")


def populate(conn: psycopg.Connection, rng: random.Random, *, customers: int, listeners: int,
             seen: datetime, days: list[date], api: bool = False) -> None:
    """The people of the run, made as the API makes them: in one transaction, or with
    `api` by the real API's statements (registered a day before the run, verified)."""
    levels = {row["badge"]: row for row in conn.execute(
        "SELECT badge, audio_rate_per_minute, video_rate_per_minute FROM badge_levels"
        " WHERE badge <> 'basic'")}
    people = SaathiiApi(conn) if api else None
    with conn.transaction() if not api else nullcontext():
        for n in range(customers + listeners):
            role = "customer" if n < customers else "listener"
            if people is not None:
                user = people.register(f"{role[0]}{n:05d}", f"+91{n:010d}", role,
                                       seen - timedelta(days=1))
                people.heartbeat(user, seen)
                if role == "listener":
                    people.verify_listener(user, seen)
            else:
                user = conn.execute(
                    "INSERT INTO users (username, dob, phone) VALUES (%s, '1995-05-05', %s)"
                    " RETURNING user_id",
                    [f"{role[0]}{n:05d}", f"+91{n:010d}"]).fetchone()["user_id"]
                conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)",
                             [user, role])
                conn.execute("INSERT INTO user_wallets (user_id) VALUES (%s)", [user])
                conn.execute("INSERT INTO user_status (user_id, is_online, last_seen)"
                             " VALUES (%s, true, %s)", [user, seen])
            if role == "customer":
                coins = rng.choice(FIRST_PURCHASES)
                if people is not None:
                    people.buy(user, coins, Decimal(coins) / 10, seen)
                else:
                    buy(conn, user, coins)
            elif (n - customers) % BADGED_EVERY == 0:
                for day in days:
                    level = levels[rng.choice(sorted(levels))]
                    conn.execute(
                        "INSERT INTO listener_badges (listener_id, date, badge,"
                        " audio_rate_per_minute, video_rate_per_minute)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (listener_id, date) DO UPDATE"
                        " SET badge = EXCLUDED.badge,"
                        " audio_rate_per_minute = EXCLUDED.audio_rate_per_minute,"
                        " video_rate_per_minute = EXCLUDED.video_rate_per_minute",
                        [user, day, level["badge"], level["audio_rate_per_minute"],
                         level["video_rate_per_minute"]])


def buy(conn: psycopg.Connection, user: int, coins: int) -> None:
    """A coin purchase: the wallet first (its row lock orders the wallet's ledger)."""
    with conn.transaction():
        wallet = conn.execute(
            "UPDATE user_wallets SET balance_coins = balance_coins + %s, updated_at = now()"
            " WHERE user_id = %s RETURNING wallet_id", [coins, user]).fetchone()["wallet_id"]
        conn.execute("INSERT INTO user_transactions (wallet_id, tx_type, coins_change)"
                     " VALUES (%s, 'purchase', %s)", [wallet, coins])


class Traffic:
    def __init__(self, clock: LogicalClock, rng: random.Random, url: str, *,
                 heartbeat: timedelta, timezone, api: str | None = None,
                 redis_url: str | None = None):
        self.clock, self.rng, self.url = clock, rng, url
        self.heartbeat, self.timezone = heartbeat, timezone
        #: As the real API ('broken' or 'fixed' end route), or None.
        self.api_mode = api
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2) if redis_url else None
        self.api: SaathiiApi | None = None
        #: Calls whose hang-up the API failed: their parties gave up on them.
        self.abandoned: set[int] = set()
        self.conn: psycopg.Connection | None = None
        self.customers: list[int] = []
        self.listeners: list[int] = []
        #: Planned hang-up of each call, logical time.
        self.plans: dict[int, datetime] = {}
        self.silent_until: dict[int, datetime] = {}
        self.last_minute: datetime | None = None
        self.stats: Counter = Counter()

    def run(self) -> dict:
        while (now := self.clock.now()) < self.clock.end:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                                connect_timeout=CONNECT_TIMEOUT)
                    self.api = SaathiiApi(self.conn, self.redis) if self.api_mode else None
                    self.stats["connections"] += 1
                self.step(now)
            except psycopg.Error as error:
                self.stats[f"db_error:{type(error).__name__}"] += 1
                if self.conn is not None and (self.conn.broken or self.conn.closed):
                    self.conn.close()
                    self.conn = None
                    time.sleep(0.1)
            self.clock.sleep_until(min(now + STEP, self.clock.end))
        return dict(self.stats)

    def step(self, now: datetime) -> None:
        if not self.customers:
            for row in self.conn.execute("SELECT user_id, role FROM user_roles ORDER BY user_id"):
                (self.customers if row["role"] == "customer" else self.listeners).append(
                    row["user_id"])
        minute = now.replace(second=0, microsecond=0)
        if minute != self.last_minute:
            self.heartbeats(now)
            self.last_minute = minute
        ongoing = self.conn.execute("SELECT call_id, user_id, listener_id FROM user_calls"
                                    " WHERE status = 'ongoing'").fetchall()
        busy = set()
        for call in ongoing:
            plan = self.plans.setdefault(call["call_id"], now + self.call_length())
            if plan <= now and call["call_id"] not in self.abandoned:
                self.hang_up(call)
            else:
                busy.update((call["user_id"], call["listener_id"]))
        self.start_calls(now, busy)
        if self.rng.random() < TOP_UP_PROBABILITY:
            self.top_up()

    def top_up(self) -> None:
        """A customer running low buys coins (as the API: one with no call left to bill)."""
        low = self.conn.execute(
            "SELECT w.user_id FROM user_wallets w WHERE w.user_id = ANY(%s)"
            " AND w.balance_coins < 150 AND (%s OR NOT EXISTS (SELECT 1 FROM user_calls c"
            " WHERE c.user_id = w.user_id AND c.settled_at IS NULL)) ORDER BY w.user_id",
            [self.customers, self.api is None]).fetchall()
        if not low:
            return
        user, coins = self.rng.choice(low)["user_id"], self.rng.choice(TOP_UPS)
        if self.api is not None:
            self.api.buy(user, coins, Decimal(coins) / 10, self.clock.now())
        else:
            buy(self.conn, user, coins)
        self.stats["top_ups"] += 1

    def present(self, user: int, now: datetime) -> bool:
        return self.silent_until.get(user, now) <= now

    def heartbeats(self, now: datetime) -> None:
        """Once a logical minute: some apps go quiet, the others report in."""
        for user in self.customers + self.listeners:
            if self.present(user, now) and self.rng.random() < SILENCE_PROBABILITY:
                self.silent_until[user] = now + timedelta(minutes=self.rng.uniform(
                    *SILENCE_MINUTES))
                self.stats["silences"] += 1
        present = [u for u in self.customers + self.listeners if self.present(u, now)]
        if self.api is not None:  # the API's heartbeat: one request, and row, per app
            for user in present:
                self.api.heartbeat(user, self.clock.now())
            return
        self.conn.execute("UPDATE user_status SET last_seen = %s, is_online = true,"
                          " updated_at = now() WHERE user_id = ANY(%s)",
                          [self.clock.now(), present])

    def call_length(self) -> timedelta:
        draw = self.rng.random()
        if draw < 0.7:
            minutes = 0.3 + self.rng.expovariate(1 / 6)
        elif draw < 0.95:
            minutes = self.rng.uniform(10, 30)
        else:
            minutes = self.rng.uniform(60, 240)
        return timedelta(minutes=minutes)

    def start_calls(self, now: datetime, busy: set[int]) -> None:
        customers = [c for c in self.customers if c not in busy and self.present(c, now)]
        listeners = [c for c in self.listeners if c not in busy and self.present(c, now)]
        wanted = int(len(self.listeners) * TARGET_BUSY) - len(busy) // 2
        for _ in range(max(0, min(wanted, MAX_STARTS_PER_STEP))):
            if self.clock.now() >= self.clock.end:  # the storm is over: the final tick's
                return
            if not customers or not listeners or self.rng.random() > START_PROBABILITY:
                continue
            customer = customers.pop(self.rng.randrange(len(customers)))
            listener = listeners.pop(self.rng.randrange(len(listeners)))
            call_type = "video" if self.rng.random() < VIDEO_SHARE else "audio"
            if self.start_call(customer, listener, call_type) is None and self.api is None:
                self.stats["starts_refused_no_coins"] += 1

    def start_call(self, caller: int, listener: int, call_type: str) -> int | None:
        """Start a call as the API does; None when the caller cannot pay minute 1."""
        if self.api is not None:
            return self.api_start_call(caller, listener, call_type)
        rate = RATES[call_type]
        with self.conn.transaction():
            wallet = self.conn.execute(
                "SELECT wallet_id, balance_coins FROM user_wallets WHERE user_id = %s"
                " FOR UPDATE", [caller]).fetchone()
            if wallet["balance_coins"] < rate:
                return None
            start = self.clock.now()
            busy_until = None
            if self.rng.random() < BUSY_UNTIL_SHARE:
                busy_until = start + timedelta(minutes=self.rng.uniform(*BUSY_UNTIL_MINUTES))
            call = self.conn.execute(
                "INSERT INTO user_calls (user_id, listener_id, call_type, start_time,"
                " coins_spent) VALUES (%s, %s, %s, %s, %s) RETURNING call_id",
                [caller, listener, call_type, start, rate]).fetchone()["call_id"]
            self.conn.execute(
                "INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id,"
                " call_minute) VALUES (%s, 'spend', %s, %s, 1)",
                [wallet["wallet_id"], -rate, call])
            self.conn.execute("UPDATE user_wallets SET balance_coins = balance_coins - %s,"
                              " updated_at = now() WHERE wallet_id = %s",
                              [rate, wallet["wallet_id"]])
            self.conn.execute("UPDATE user_status SET is_busy = true, busy_until = %s,"
                              " updated_at = now() WHERE user_id IN (%s, %s)",
                              [busy_until, caller, listener])
        self.plans[call] = start + self.call_length()
        self.stats[f"calls_started_{call_type}"] += 1
        return call

    def api_start_call(self, caller: int, listener: int, call_type: str) -> int | None:
        """The real API's start route; None when it refused (no coins, a party busy)."""
        try:
            call = self.api.start_call(caller, listener, call_type, self.clock.now())
        except ApiError as error:
            self.stats[f"api_start_refused_{error.status}"] += 1
            return None
        except redis.RedisError:  # its call hash: after the call's rows, which stand
            self.stats["api_start_redis_error"] += 1
            return None
        self.plans[call] = self.clock.now() + self.call_length()
        self.stats[f"calls_started_{call_type}"] += 1
        return call

    def hang_up(self, call: dict) -> None:
        """A party hangs up: the API's end route (broken or fixed), or our end_call."""
        if self.api is None:
            self.end_call(call["call_id"])
            return
        try:
            self.api.end_call(call["call_id"], call["user_id"], self.clock.now(),
                              fixed=self.api_mode == "fixed")
            self.stats["api_hang_up_ended"] += 1
        except ApiError as error:
            self.stats[f"api_hang_up_failed_{error.status}"] += 1
            self.abandoned.add(call["call_id"])
            if self.rng.random() < CLOSE_AFTER_FAILED_HANG_UP:  # the caller closes the app
                self.silent_until[call["user_id"]] = self.clock.now() + timedelta(
                    minutes=self.rng.uniform(*SILENCE_MINUTES))
        except redis.RedisError:
            self.stats["api_hang_up_redis_error"] += 1
        self.plans.pop(call["call_id"], None)

    def end_call(self, call_id: int) -> None:
        """The hang-up through workers.app.end_call at the logical now, read once the
        call is locked (a tick that charged it has committed by then)."""
        from workers.app import end_call

        with self.conn.transaction():
            row = self.conn.execute("SELECT status FROM user_calls WHERE call_id = %s"
                                    " FOR UPDATE", [call_id]).fetchone()
            if row is not None and row["status"] == "ongoing":
                tick = end_call(self.conn, call_id, self.clock.now(), timezone=self.timezone,
                                heartbeat_timeout=self.heartbeat)
                for reason, count in tick.end_reasons.items():
                    self.stats[f"hang_up_ended_{reason}"] += count
        self.plans.pop(call_id, None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.traffic")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--api", choices=API_MODES, help="act as the real Saathii API")
    LogicalClock.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from workers.settings import load_settings

    settings = load_settings()
    traffic = Traffic(LogicalClock.from_args(args), random.Random(args.seed),
                      settings.database_url,
                      heartbeat=timedelta(seconds=settings.heartbeat_timeout_seconds),
                      timezone=settings.timezone, api=args.api, redis_url=settings.redis_url)
    print(json.dumps(traffic.run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
