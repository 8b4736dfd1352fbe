"""Billing driven by hypothesis: calls start and end as the API does them, wallets are
topped up, apps fall silent, the clock moves, and ticks come on time, repeated, late,
skipped and two at once. After every step the ledger's invariants must hold."""

import os
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from ledger import RATES, add_user, buy, check_ledger, end_call_as_api, seen, start_call
from psycopg.rows import dict_row

from workers.jobs.coin_deduction import deduct_per_minute_coins

IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
HEARTBEAT = timedelta(seconds=120)
#: The billing rules' defaults (workers.jobs.coin_deduction.Params), as the ticks use them.
SLACK = timedelta(seconds=60)
MAX_MINUTES = 240
TABLES = ("user_transactions", "user_calls", "listener_badges", "user_status", "user_wallets",
          "user_roles", "users")


class Billing(RuleBasedStateMachine):
    url: str  # set by the test: the database this machine runs against

    def __init__(self):
        super().__init__()
        self.conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
        self.conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        self.now = T0
        self.callers: list[int] = []
        self.listeners: list[int] = []
        self.calls: list[int] = []
        self.ticked_at: datetime | None = None
        self.last_call_at_tick = 0

    def teardown(self):
        self.conn.close()

    def tick(self, at: datetime, conn=None) -> None:
        deduct_per_minute_coins(conn or self.conn, at, timezone=IST)

    def ticked(self) -> None:
        """The last on-time tick was now: the calls up to now have been through it."""
        self.ticked_at = self.now
        self.last_call_at_tick = max(self.calls, default=0)

    @initialize(callers=st.integers(1, 4), listeners=st.integers(1, 3))
    def people(self, callers, listeners):
        self.callers = [add_user(self.conn, seen=self.now) for _ in range(callers)]
        self.listeners = [add_user(self.conn, role="listener", seen=self.now)
                          for _ in range(listeners)]

    @rule(data=st.data(), coins=st.integers(1, 400))
    def top_up(self, data, coins):
        buy(self.conn, data.draw(st.sampled_from(self.callers)), coins)

    @rule(data=st.data(), call_type=st.sampled_from(["audio", "video"]),
          pay_first_minute=st.booleans())
    def start_a_call(self, data, call_type, pay_first_minute):
        caller = data.draw(st.sampled_from(self.callers))
        listener = data.draw(st.sampled_from(self.listeners))
        balance = self.conn.execute("SELECT balance_coins FROM user_wallets WHERE user_id = %s",
                                    [caller]).fetchone()["balance_coins"]
        if pay_first_minute and balance < RATES[call_type]:
            return  # the API refuses to start it
        self.calls.append(start_call(self.conn, caller, listener, self.now, call_type,
                                     pay_first_minute=pay_first_minute))

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def api_ends_a_call(self, data):
        call_id = data.draw(st.sampled_from(self.calls))
        if self.conn.execute("SELECT status FROM user_calls WHERE call_id = %s",
                             [call_id]).fetchone()["status"] == "ongoing":
            end_call_as_api(self.conn, call_id, self.now)

    @rule(seconds=st.integers(0, 240))
    def time_passes(self, seconds):
        self.now += timedelta(seconds=seconds)

    @rule(data=st.data())
    def an_app_reports(self, data):
        seen(self.conn, self.now, data.draw(st.sampled_from(self.callers + self.listeners)))

    @rule()
    def everyone_reports(self):
        seen(self.conn, self.now, *self.callers, *self.listeners)

    @rule()
    def tick_on_time(self):
        self.tick(self.now)
        self.ticked()

    @rule()
    def tick_twice(self):
        self.tick(self.now)
        self.tick(self.now)
        self.ticked()

    @rule(minutes=st.integers(1, 10))
    def a_late_tick(self, minutes):
        self.tick(self.now - timedelta(minutes=minutes))

    @rule()
    def two_replicas_tick_at_once(self):
        errors = []

        def replica():
            try:
                with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
                    self.tick(self.now, conn)
            except Exception as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=replica) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        self.ticked()

    @invariant()
    def the_ledger_balances(self):
        check_ledger(self.conn, settled=False)

    @invariant()
    def after_a_tick_no_ongoing_call_owes_or_is_silent(self):
        if self.ticked_at is None:
            return
        behind = self.conn.execute(
            "SELECT call_id, due, paid, silent FROM ongoing_calls_at(%s, %s, %s, %s)"
            " WHERE (due > paid OR silent OR over_max) AND call_id <= %s",
            [self.ticked_at, HEARTBEAT, SLACK, MAX_MINUTES, self.last_call_at_tick]).fetchall()
        assert behind == []
        unsettled = self.conn.execute(
            "SELECT call_id FROM user_calls WHERE status <> 'ongoing' AND settled_at IS NULL"
            " AND end_time < %s", [self.ticked_at]).fetchall()
        assert unsettled == []


def test_billing_keeps_the_ledger_whatever_happens(db):
    Billing.url = db.url
    machine = Billing.TestCase
    examples = int(os.environ.get("BILLING_MODEL_EXAMPLES", "20"))  # more for a deep run
    machine.settings = settings(max_examples=examples, stateful_step_count=20, deadline=None,
                                suppress_health_check=[HealthCheck.too_slow])
    machine().runTest()
