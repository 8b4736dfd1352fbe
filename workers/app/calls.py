"""Ending a call when a party hangs up, as the Saathii API does: through the same billing
tick the workers run every minute (workers.jobs.coin_deduction), so that a hang-up charges,
ends and settles a call by exactly the rules a tick would."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

# The module, not its names: coin_deduction imports workers.app.events, so this package
# may be importing while coin_deduction is.
from workers.jobs import coin_deduction
from workers.settings import (
    DEFAULT_HEARTBEAT_SLACK,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_CALL_MINUTES,
)


def end_call(conn: psycopg.Connection, call_id: int, now: datetime, *, timezone: ZoneInfo,
             heartbeat_timeout: timedelta = timedelta(seconds=DEFAULT_HEARTBEAT_TIMEOUT),
             heartbeat_slack: timedelta = timedelta(seconds=DEFAULT_HEARTBEAT_SLACK),
             max_call_length: timedelta = timedelta(minutes=DEFAULT_MAX_CALL_MINUTES),
             ) -> coin_deduction.Tick:
    """End one call at logical time `now` as a party asked: its owed minutes are charged
    first, as a tick would; it ends 'completed', or 'dropped' for insufficient coins (or a
    silent party, or its maximum length) if those came first; then it is settled and its
    parties freed. Ending a call that already ended does nothing. The billing rules default
    to the workers' defaults: pass the values the workers are configured with
    (HEARTBEAT_TIMEOUT_SECONDS, HEARTBEAT_SLACK_SECONDS, MAX_CALL_MINUTES). Runs in a
    transaction of its own, or as a savepoint of the caller's."""
    rules = coin_deduction.Params(
        heartbeat_timeout_seconds=int(heartbeat_timeout.total_seconds()),
        heartbeat_slack_seconds=int(heartbeat_slack.total_seconds()),
        max_call_minutes=int(max_call_length.total_seconds() // 60))
    return coin_deduction.hang_up(conn, call_id, now, timezone=timezone, rules=rules)
