"""The `periodic` actor option that periodiq's scheduler reads, computed by workers.cron.

periodiq 0.14's own CronSpec never fires day-of-week 0, skips or repeats daily jobs around
DST changes, and, comparing its actors' next dates by wall clock, sleeps through minutes
before a fall-back (tests/unit/test_cron.py pins each defect). Its Scheduler asks an
actor's `periodic` option only two things, validate(now) and next_valid_date(now); this
class answers both from our cron instants, in UTC, so the comparisons are by real time.

Only the scheduler asks, so the timezone may be given as a function, called at the first
question: the actors' (workers.actors) boots the scheduler process and answers
APP_TIMEZONE, so that declaring an actor reads no timezone and boots nothing.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pendulum

from workers.engine import cron

#: The instants of this much time ahead are computed at once and reused (an every-minute
#: job asks every minute; computing a day of its instants takes a few milliseconds).
WINDOW = timedelta(days=3)


def _minute(now: datetime) -> datetime:
    """The start of `now`'s minute as a plain UTC datetime (pendulum's arithmetic differs)."""
    return datetime.fromtimestamp(int(now.timestamp()) // 60 * 60, UTC)


class Periodic:
    def __init__(self, spec: str, timezone: ZoneInfo | Callable[[], ZoneInfo]):
        self.spec = cron.parse(spec)
        self._timezone = timezone
        self._start: datetime | None = None
        self._instants: list[datetime] = []

    @property
    def timezone(self) -> ZoneInfo:
        if callable(self._timezone):
            self._timezone = self._timezone()
        return self._timezone

    def _upcoming(self, start: datetime) -> list[datetime]:
        """The instants from `start` on, at least half a window of them."""
        if self._start is None or not self._start <= start < self._start + WINDOW / 2:
            self._start = start
            self._instants = list(cron.instants(self.spec, self.timezone, start, start + WINDOW))
        return self._instants

    def validate(self, now: datetime) -> bool:
        """Whether the job fires in the minute of `now` (periodiq ignores the seconds)."""
        minute = _minute(now)
        upcoming = self._upcoming(minute)
        i = bisect_left(upcoming, minute)
        return i < len(upcoming) and upcoming[i] == minute

    def next_valid_date(self, now: datetime) -> pendulum.DateTime:
        """The next instant the job fires, after `now`'s minute."""
        minute = _minute(now)
        upcoming = self._upcoming(minute)
        i = bisect_right(upcoming, minute)
        if i < len(upcoming):
            return pendulum.instance(upcoming[i])
        return pendulum.instance(cron.next_after(self.spec, self.timezone, minute))

    def __str__(self) -> str:
        zone = "APP_TIMEZONE" if callable(self._timezone) else self._timezone.key
        return f"{self.spec.source} ({zone})"

    def __repr__(self) -> str:
        return f"<Periodic {self}>"
