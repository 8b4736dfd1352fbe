"""The plans PostgreSQL chooses for a billing tick stay linear in the calls it touches.

Within a tick, the calls it ends and settles did not exist as ended calls when the table
was last analysed: the planner expects one row where there are thousands, and a join it
plans as a nested loop compares every row with every other (settling 10,000 calls once
took 9 s, and 100,000 would take hours). Time is not asserted here (make bench measures
it): the work is. Each statement of a real tick is first run under EXPLAIN ANALYZE in a
savepoint that is rolled back, and the rows its joins compared and threw away are counted.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.world import populate
from workers.jobs.coin_deduction import deduct_per_minute_coins

NOW = datetime(2026, 11, 22, 6, 30, tzinfo=UTC)
CALLS = 2_000


class Explaining:
    """A connection that runs each statement under EXPLAIN ANALYZE (rolled back), then
    for real, keeping the plans."""

    def __init__(self, conn):
        self.conn, self.plans = conn, []

    def transaction(self):
        return self.conn.transaction()

    def execute(self, query, params=None):
        with self.conn.transaction(force_rollback=True):
            plan = self.conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params)
            self.plans.append(plan.fetchone()["QUERY PLAN"][0]["Plan"])
        return self.conn.execute(query, params)


def rows_thrown_away_by_joins(plan: dict) -> int:
    """Rows every join of the plan compared and rejected (EXPLAIN reports them per loop)."""
    own = plan.get("Rows Removed by Join Filter", 0) * plan.get("Actual Loops", 1)
    return own + sum(rows_thrown_away_by_joins(child) for child in plan.get("Plans", []))


def test_a_tick_that_ends_and_settles_many_calls_compares_each_only_a_few_times(conn):
    populate(conn, calls=CALLS, now=NOW, broke=0.5)  # half the callers are out of coins
    conn.execute("UPDATE user_status SET busy_until = %s WHERE user_id %% 10 = 0",
                 [NOW - timedelta(minutes=1)])  # and a tenth of everyone's time is up
    explaining = Explaining(conn)

    tick = deduct_per_minute_coins(explaining, NOW, timezone=ZoneInfo("Asia/Kolkata"),
                                   end_expired=True)

    assert sum(tick.end_reasons.values()) > CALLS / 2
    assert tick.calls_settled == sum(tick.end_reasons.values())
    thrown_away = [rows_thrown_away_by_joins(plan) for plan in explaining.plans]
    assert max(thrown_away) <= 2 * CALLS, str(thrown_away)
