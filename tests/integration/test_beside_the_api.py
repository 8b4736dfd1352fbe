"""The workers beside the real Saathii API, on its own database (saathii_api.sql) adopted
by `db init`: the API's statements (saathii_api.py) for registration, heartbeats, logout,
starting a call and its hang-up (as written, failing; and with its one-line fix), with the
workers' real jobs run at logical times in between, and the ledger's invariants checked
after every scenario."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import redis
from ledger import call, check_ledger, money, spent_minutes

import workers.cli
from chaos.saathii_api import ApiError, SaathiiApi
from workers.engine.hooks import Hooks
from workers.engine.runs import RunOptions, Status, run_job
from workers.engine.schema import apply_schema
from workers.observability.logs import RunLog
from workers.schedule import JOBS
from workers.settings import Settings

IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
MINUTE = timedelta(minutes=1)
REGISTERED = T0 - timedelta(days=30)
_phones = iter(range(1, 10**6))


def options(client, **settings) -> RunOptions:
    return RunOptions(timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(minutes=1),
                      settings=settings, redis=client, hooks=Hooks(RunLog()))


class World:
    """The API and the workers on one database, on a logical clock."""

    def __init__(self, db, conn, **settings):
        self.conn, self.url = conn, db.url
        self.redis = redis.Redis.from_url(db.redis_url)
        self.api = SaathiiApi(conn, self.redis)
        self.options = options(self.redis, **settings)

    def person(self, role: str, *, coins: int = 0, at: datetime = REGISTERED) -> int:
        n = next(_phones)
        user = self.api.register(f"{role[0]}{n}", f"+91{n:010d}", role, at)
        if role == "listener":
            self.api.verify_listener(user, at)
        if coins:
            self.api.buy(user, coins, Decimal(coins) / 10, at)
        return user

    def run(self, job: str, at: datetime) -> dict:
        outcome = run_job(self.conn, JOBS[job], at, self.options)
        assert outcome.status is Status.SUCCEEDED, outcome.error
        return outcome.result

    def tick(self, at: datetime) -> dict:
        return self.run("coin_deduction", at)

    def badges(self, day) -> None:
        """badge_assignment's run for a local day (its calls can then be settled)."""
        self.run("badge_assignment", datetime(day.year, day.month, day.day, 0, 1, tzinfo=IST))

    def badge(self, listener: int, badge: str, rate: str, day=None) -> None:
        """The listener's badge for a day (T0's), as badge_assignment would give it."""
        self.conn.execute(
            "INSERT INTO listener_badges (listener_id, date, badge, audio_rate_per_minute,"
            " video_rate_per_minute) VALUES (%s, %s, %s, %s, 10) ON CONFLICT (listener_id,"
            " date) DO UPDATE SET badge = EXCLUDED.badge,"
            " audio_rate_per_minute = EXCLUDED.audio_rate_per_minute",
            [listener, day or T0.date(), badge, Decimal(rate)])

    def seen(self, at: datetime, *users: int) -> None:
        for user in users:
            self.api.heartbeat(user, at)

    def wallet(self, user: int) -> dict:
        return self.conn.execute("SELECT * FROM user_wallets WHERE user_id = %s",
                                 [user]).fetchone()

    def status(self, user: int) -> dict:
        return self.conn.execute("SELECT * FROM user_status WHERE user_id = %s",
                                 [user]).fetchone()


@pytest.fixture
def api_conn(api_db):
    with api_db.connect() as conn:
        yield conn


@pytest.fixture
def world(api_db, api_conn):
    w = World(api_db, api_conn)
    w.badges(T0.date())
    return w


def test_a_call_the_api_starts_is_billed_and_its_minute_1_linked_to_it(world):
    caller, listener = world.person("customer", coins=500), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    [first] = world.conn.execute("SELECT call_id FROM user_transactions"
                                 " WHERE tx_type = 'spend'").fetchall()
    assert first["call_id"] is None  # as the API writes it

    for minute in (1, 2, 3):
        world.seen(T0 + minute * MINUTE - timedelta(seconds=5), caller, listener)
        world.tick(T0 + minute * MINUTE)

    assert spent_minutes(world.conn, c) == [1, 2, 3, 4]
    assert (call(world.conn, c)["coins_spent"], world.wallet(caller)["balance_coins"]) == (
        40, 460)
    check_ledger(world.conn, settled=False)


def test_an_unnamed_spend_of_an_interrupted_start_stays_apart_from_the_next_call(world):
    """The API debited minute 1 and died before inserting the call: that spend names no
    call; the caller's next call takes its own minute 1, the newest before it started."""
    caller, listener = world.person("customer", coins=500), world.person("listener")
    world.api.move_coins(caller, 10, "subtract", "spend", T0)  # and then the process died
    c = world.api.start_call(caller, listener, "audio", T0 + 2 * MINUTE)
    world.tick(T0 + 2 * MINUTE)
    spends = world.conn.execute("SELECT call_id, call_minute, created_at FROM user_transactions"
                                " WHERE tx_type = 'spend' ORDER BY transaction_id").fetchall()
    assert [(s["call_id"], s["call_minute"]) for s in spends] == [(None, None), (c, 1)]
    check_ledger(world.conn, settled=False)


def test_a_hang_up_the_api_fails_is_billed_only_until_the_apps_went_quiet(world):
    """The API's end route fails on every call (HTTP 500, nothing written). The apps close
    after 2:30: the customer owes the minutes begun before 2:30 + the 60 s slack (minutes
    1-4), not those up to the 120 s detection timeout."""
    caller, listener = world.person("customer", coins=500), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    world.seen(T0 + timedelta(minutes=2, seconds=30), caller, listener)
    with pytest.raises(ApiError, match="500"):
        world.api.end_call(c, caller, T0 + timedelta(minutes=2, seconds=30), fixed=False)

    ended = [world.tick(T0 + minute * MINUTE)["calls_ended"] for minute in range(1, 9)]

    assert {"heartbeat_timeout": 1} in ended
    done = call(world.conn, c)
    assert (done["status"], done["end_reason"], done["end_time"]) == (
        "dropped", "heartbeat_timeout", T0 + timedelta(minutes=3, seconds=30))
    assert spent_minutes(world.conn, c) == [1, 2, 3, 4]
    assert world.wallet(caller)["balance_coins"] == 460
    freed = world.status(caller)
    assert (freed["is_busy"], freed["wait_time"]) == (False, None)  # as the API's end would
    check_ledger(world.conn)


def test_a_stuck_call_whose_apps_stay_open_ends_at_its_maximum_length(api_db, api_conn):
    world = World(api_db, api_conn, max_call_minutes=30)
    world.badges(T0.date())
    caller, listener = world.person("customer", coins=5000), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    with pytest.raises(ApiError):
        world.api.end_call(c, caller, T0 + 5 * MINUTE, fixed=False)
    world.seen(T0 + 44 * MINUTE, caller, listener)  # the apps heartbeat on

    assert world.tick(T0 + 45 * MINUTE)["calls_ended"] == {"max_duration": 1}
    assert (call(world.conn, c)["end_time"], len(spent_minutes(world.conn, c))) == (
        T0 + 30 * MINUTE, 30)
    check_ledger(world.conn)


def test_the_apis_fixed_hang_up_is_charged_to_its_end_and_not_paid_twice(world, capsys):
    caller, listener = world.person("customer", coins=500), world.person("listener")
    world.badge(listener, "silver", "1.50")
    c = world.api.start_call(caller, listener, "audio", T0)
    for minute in (1, 2):
        world.seen(T0 + minute * MINUTE, caller, listener)
        world.tick(T0 + minute * MINUTE)
    world.seen(T0 + timedelta(minutes=3, seconds=20), caller, listener)
    # The API pays 3 minutes (the coins spent when it ends) x 1.50: 4 whole rupees, as
    # coins; minute 4 began at 3:00, before its end, and no tick charged it yet.
    assert world.api.end_call(c, caller, T0 + timedelta(minutes=3, seconds=20),
                              fixed=True) == 4

    result = world.tick(T0 + 4 * MINUTE)

    assert (result["minutes_charged"], result["api_calls_closed"], result["paid_by_api"]) == (
        1, 1, 1)
    done = call(world.conn, c)
    assert spent_minutes(world.conn, c) == [1, 2, 3, 4]
    assert (done["end_reason"], done["paid_by"], done["listener_pay"]) == (
        "api", "api", Decimal("6.00"))  # 4 minutes x 1.50, what was due
    assert done["listener_money_earned"] == 4  # the API's own figure, kept
    assert world.wallet(listener)["balance_coins"] == 4  # the API's credit, nothing more
    assert money(world.conn, listener) == 0  # not paid twice
    assert world.tick(T0 + 5 * MINUTE)["calls_settled"] == 0
    check_ledger(world.conn)

    assert workers.cli.main(["status"], Settings(_env_file=None, database_url=world.url)) == 0
    assert ("1 call(s) were paid by the API's own hang-up: 4 coins credited to"
            " balance_coins where ₹6.00 was due") in capsys.readouterr().err


def test_a_tick_ending_a_call_inside_the_apis_hang_up_leaves_it_ended_and_paid_once(world):
    """The fixed hang-up reads the call 'ongoing'; before it writes the end, a tick ends
    the call (its apps went quiet at 1:30) and pays the listener. The hang-up's write,
    which asks only for the call id, is refused: the call keeps the tick's end, and the
    API's credit, written after it, never happens."""
    caller, listener = world.person("customer", coins=500), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    world.seen(T0 + timedelta(minutes=1, seconds=30), caller, listener)
    ticks = []

    with pytest.raises(ApiError, match="500.*already ended"):
        world.api.end_call(c, caller, T0 + 4 * MINUTE, fixed=True,
                           meanwhile=lambda: ticks.append(world.tick(T0 + 4 * MINUTE)))

    assert (ticks[0]["calls_ended"], ticks[0]["calls_settled"]) == ({"heartbeat_timeout": 1}, 1)
    done = call(world.conn, c)
    assert (done["status"], done["end_reason"], done["end_time"], done["paid_by"]) == (
        "dropped", "heartbeat_timeout", T0 + timedelta(minutes=2, seconds=30), "workers")
    assert spent_minutes(world.conn, c) == [1, 2, 3]
    assert (money(world.conn, listener), world.wallet(listener)["balance_coins"]) == (
        Decimal("3.00"), 0)  # paid once, by the workers
    check_ledger(world.conn)


def test_the_exact_pay_is_kept_where_the_api_keeps_whole_rupees(world):
    caller, listener = world.person("customer", coins=500), world.person("listener")
    world.badge(listener, "bronze", "1.25")
    c = world.api.start_call(caller, listener, "audio", T0)
    world.seen(T0 + timedelta(minutes=4, seconds=50), caller, listener)
    world.tick(T0 + 4 * MINUTE)  # 5 minutes
    world.tick(T0 + 8 * MINUTE)  # silent since 4:50: ends at 5:50, owing minutes 1-6

    done = call(world.conn, c)
    assert (done["paid_by"], done["listener_pay"]) == ("workers", Decimal("7.50"))
    assert done["listener_money_earned"] == 8  # the API's integer column, rounded
    assert money(world.conn, listener) == Decimal("7.50")  # the money itself, exact
    check_ledger(world.conn)


def test_a_caller_calling_themselves_keeps_the_coins_the_api_took(world):
    """The API lets a customer who is also a (verified) listener call themselves: it debits
    minute 1 before it inserts the call, so no check of ours may refuse that insert."""
    both = world.person("listener", coins=0)
    world.conn.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'customer')", [both])
    world.api.buy(both, 100, Decimal("10.00"), REGISTERED)
    c = world.api.start_call(both, both, "audio", T0)
    assert call(world.conn, c)["coins_spent"] == 10
    world.tick(T0 + MINUTE)
    check_ledger(world.conn, settled=False)


def test_an_account_deleted_as_the_api_does_takes_its_calls_and_leaves_the_ledger(world):
    caller, listener = world.person("customer", coins=500), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    world.seen(T0 + timedelta(minutes=1, seconds=50), caller, listener)
    world.tick(T0 + MINUTE)
    world.tick(T0 + 6 * MINUTE)  # silent: ended and settled, the listener paid
    assert money(world.conn, listener) == Decimal("3.00")  # minutes 1-3 (before 2:50)

    world.api.delete_account(caller, "customer", T0 + 7 * MINUTE)

    assert world.conn.execute("SELECT count(*) AS n FROM user_calls").fetchone()["n"] == 0
    [earn] = world.conn.execute("SELECT call_id, money_change FROM user_transactions"
                                " WHERE tx_type = 'earn'").fetchall()
    assert (earn["call_id"], earn["money_change"]) == (None, Decimal("3.00"))
    assert spent_minutes(world.conn, c) == []
    check_ledger(world.conn)


def test_presence_follows_the_apis_heartbeat_and_logout(world):
    listener, quitter = world.person("listener"), world.person("listener")
    world.seen(T0, listener, quitter)
    world.run("presence_cleanup", T0 + 10 * MINUTE)  # both silent: offline
    assert not world.status(listener)["is_online"] and not world.status(quitter)["is_online"]

    world.seen(T0 + 12 * MINUTE, listener)  # its app is back: a heartbeat only
    world.api.login(quitter, T0 + 11 * MINUTE)
    result = world.run("presence_cleanup", T0 + 12 * MINUTE)  # quitter online: mark gone
    world.api.logout(quitter, T0 + 13 * MINUTE)
    world.run("presence_cleanup", T0 + 15 * MINUTE)

    assert result["back_online"] == 1
    assert world.status(listener)["is_online"] is True  # on the feed again
    assert world.status(quitter)["is_online"] is False  # it logged out


def test_the_apis_wait_time_ends_a_stale_busy_state(world):
    """The API's end route fails: its parties stay busy with the wait_time it set at the
    start (the minutes the coins covered); once the call is over and that time has gone by,
    presence_cleanup frees them."""
    caller, listener = world.person("customer", coins=30), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)  # wait_time 3
    assert world.status(listener)["wait_time"] == 3
    world.conn.execute("UPDATE user_calls SET status = 'completed', end_time = %s"
                       " WHERE call_id = %s", [T0 + MINUTE, c])  # ended by hand, say
    world.run("presence_cleanup", T0 + 5 * MINUTE)
    assert (world.status(listener)["is_busy"], world.status(listener)["wait_time"]) == (
        False, None)


def test_a_listener_the_api_deactivated_gets_no_badge(world):
    kept, deactivated = world.person("listener"), world.person("listener")
    world.api.deactivate(deactivated)
    tomorrow = T0.date() + timedelta(days=1)
    world.badges(tomorrow)
    badged = {row["listener_id"] for row in world.conn.execute(
        "SELECT listener_id FROM listener_badges WHERE date = %s", [tomorrow])}
    assert badged == {kept}


def test_the_apis_call_hash_keeps_its_fields_and_ttl_and_an_expired_one_stays_gone(world):
    caller, listener = world.person("customer", coins=500), world.person("listener")
    c = world.api.start_call(caller, listener, "audio", T0)
    key = f"call:{c}"
    world.seen(T0 + 2 * MINUTE, caller, listener)
    world.tick(T0 + MINUTE)
    assert world.redis.hget(key, "coins_spent") == b"20"
    assert world.redis.hget(key, "call_type") == b"audio" and world.redis.ttl(key) > 7000

    world.redis.delete(key)  # its 2 hours are up
    world.tick(T0 + 2 * MINUTE)
    assert not world.redis.exists(key)


def test_adoption_holds_the_backlog_the_api_left_and_the_operator_ends_it(raw_api_db, capsys):
    """The API's end route fails on every call: its database holds calls 'ongoing' for days.
    db init holds those whose parties are long silent; the ticks charge them nothing; an
    operator ends them at their last sighting, uncharged."""
    now = datetime.now(UTC).replace(microsecond=0)
    conn = raw_api_db.connect()
    api = SaathiiApi(conn)
    people = [api.register(f"p{n}", f"+99{n}", role, now - timedelta(days=10))
              for n, role in enumerate(["customer", "listener", "customer", "listener"])]
    for listener in people[1::2]:
        api.verify_listener(listener, now - timedelta(days=10))
    for customer in people[::2]:
        api.buy(customer, 1000, Decimal("100.00"), now - timedelta(days=10))
    stuck = api.start_call(people[0], people[1], "audio", now - timedelta(days=3))
    api.heartbeat(people[0], now - timedelta(days=3, minutes=-20))  # talked 20 minutes
    api.heartbeat(people[1], now - timedelta(days=3, minutes=-20))
    live = api.start_call(people[2], people[3], "audio", now - timedelta(minutes=3))
    api.heartbeat(people[2], now - timedelta(seconds=30))
    api.heartbeat(people[3], now - timedelta(seconds=30))

    applied = apply_schema(conn)

    assert applied.adoption.calls == 1 and applied.adoption.oldest == call(conn, stuck)[
        "start_time"]
    assert applied.adoption.coins_at_stake == 200  # minutes 2-21 at 10 coins
    world = World(raw_api_db, conn)
    for days_ago in (3, 0):
        world.badges((now - timedelta(days=days_ago)).astimezone(IST).date())
    world.tick(now)
    assert (call(conn, stuck)["status"], spent_minutes(conn, stuck)) == ("ongoing", [1])
    assert call(conn, live)["coins_spent"] > 10  # the live call is billed as usual

    settings = Settings(_env_file=None, database_url=raw_api_db.url)
    assert workers.cli.main(["adopted-calls", "--end", "--dry-run"], settings) == 0
    assert "would end 1 held call(s)" in capsys.readouterr().out
    assert call(conn, stuck)["status"] == "ongoing"
    assert workers.cli.main(["adopted-calls", "--end"], settings) == 0
    done = call(conn, stuck)
    assert (done["status"], done["end_reason"], done["coins_spent"]) == (
        "dropped", "adoption_backlog", 10)
    assert done["end_time"] == now - timedelta(days=3, minutes=-20)
    assert world.status(people[0])["is_busy"] is False
    world.tick(now + MINUTE)
    assert call(conn, stuck)["settled_at"] is not None
    check_ledger(conn, settled=False)
    conn.close()
