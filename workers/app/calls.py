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


def end_call(conn: psycopg.Connection, call_id: int, now: datetime, *, timezone: ZoneInfo,
             heartbeat_timeout: timedelta) -> coin_deduction.Tick:
    """End one call at logical time `now` as a party asked: its owed minutes are charged
    first, as a tick would; it ends 'completed', or 'dropped' for insufficient coins (or a
    silent party) if those minutes could not all be paid; then it is settled and its
    parties freed. Ending a call that already ended does nothing. Runs in a transaction of
    its own, or as a savepoint of the caller's."""
    return coin_deduction.hang_up(conn, call_id, now, timezone=timezone,
                                  heartbeat_timeout=heartbeat_timeout)
