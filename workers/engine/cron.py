"""Cron arithmetic of our own: parse a 5-field spec, list the instants a job fires.

A job fires at every real instant whose wall-clock reading in `tz` matches the spec. Day of
month and day of week follow the vixie rule (both restricted: either may match; "restricted"
means not covering the whole range, as periodiq counts it). DST: if the hour field is a
wildcard ('*', '*/n', '0-23' or '0-23/n') the job follows real time: wall times inside a
spring-forward gap never happen (no fire), wall times inside a fall-back overlap happen twice
(two fires). If the hour field is restricted (fixed-time jobs such as "30 2 * * *") the job
fires once per matching wall time: in an overlap only at the first occurrence (fold=0); in a
gap at the wall time shifted forward by the gap (02:30 -> 03:30 in Europe/Paris on
spring-forward day). Instants are aware UTC datetimes, ascending, without duplicates.
Day of week 0 and 7 both mean Sunday. These instants, not periodiq's own cron arithmetic,
drive the scheduler (see workers.periodic): periodiq 0.14 never fires day-of-week 0 and
misfires around DST changes.
"""

import functools
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@hourly": "0 * * * *",
}
_MONTHS = {n: i for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_WEEKDAYS = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # longest possible
_FIELDS = (  # name, lowest, highest, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)


@dataclass(frozen=True)
class CronSpec:
    """A parsed 5-field spec. Weekdays are ISO: 1 = Monday .. 7 = Sunday."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_restricted: bool
    dow_restricted: bool
    #: False when the hour field is '*', '*/n', '0-23' or '0-23/n': the job follows real time.
    hour_restricted: bool
    source: str = field(default="", compare=False)

    def matches_day(self, d: date) -> bool:
        """Whether the spec's month, day-of-month and day-of-week fields accept `d`."""
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, d.isoweekday() in self.weekdays
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        return dom and dow


def _expand(spec: str, text: str, name: str, lo: int, hi: int, names: dict) -> set[int]:
    def bad(detail: str) -> ValueError:
        return ValueError(f"bad cron spec {spec!r}: {name} field {text!r}: {detail}")

    def value(tok: str) -> int:
        if tok.lower() in names:
            return names[tok.lower()]
        if not (tok.isascii() and tok.isdigit()):
            raise bad(f"bad token {tok!r}")
        if not lo <= int(tok) <= hi:
            raise bad(f"{tok} is out of range {lo}-{hi}")
        return int(tok)

    values: set[int] = set()
    for token in text.split(","):
        span, slash, step_text = token.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit() and int(step_text) > 0):
                raise bad(f"bad step in {token!r}")
            step = int(step_text)
            if "-" not in span and span != "*":
                raise bad(f"a step needs '*' or a range a-b, not {token!r}")
        if span == "*":
            first, last = lo, hi
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = value(a), value(b)
            if first > last:
                raise bad(f"reversed range {span!r}")
        else:
            first = last = value(span)
        values.update(range(first, last + 1, step))
    if name == "day-of-week":  # ISO weekdays: Sunday is 7, however it was written
        values = {7 if day == 0 else day for day in values}
    return values


def parse(spec: str) -> CronSpec:
    """Parse `spec`; ValueError naming the spec and what is wrong."""
    text = spec.strip()
    if text.startswith("@"):
        if text not in _ALIASES:
            raise ValueError(f"bad cron spec {spec!r}: unknown alias; known: {', '.join(_ALIASES)}")
        text = _ALIASES[text]
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"bad cron spec {spec!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    m, h, dom, mon, dow = (
        frozenset(_expand(spec, t, *f)) for t, f in zip(parts, _FIELDS, strict=True)
    )
    hour_span = parts[1].partition("/")[0]
    cs = CronSpec(
        minutes=m,
        hours=h,
        days=dom,
        months=mon,
        weekdays=dow,
        dom_restricted=len(dom) < 31,
        dow_restricted=len(dow) < 7,
        hour_restricted="," in parts[1] or hour_span not in ("*", "0-23"),
        source=spec,
    )
    if not cs.dow_restricted and not any(d <= _MONTH_DAYS[x - 1] for x in mon for d in dom):
        raise ValueError(f"bad cron spec {spec!r}: day-of-month never occurs in its month(s)")
    return cs


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment}")
    return moment.astimezone(UTC)


def _spec(spec: str | CronSpec) -> CronSpec:
    return spec if isinstance(spec, CronSpec) else parse(spec)


@functools.lru_cache(maxsize=64)  # at most ~4 MB: 64 every-minute days
def _day_instants(cs: CronSpec, tz: tzinfo, day: date) -> tuple[datetime, ...]:
    """A wall date's instants, in UTC. Cached: the health checks and the metrics ask for
    the same few days at every look, and an every-minute day is 1,440 zone conversions."""
    out = []
    for h, m in ((h, m) for h in sorted(cs.hours) for m in sorted(cs.minutes)):
        a = datetime(day.year, day.month, day.day, h, m, tzinfo=tz).astimezone(UTC)
        b = datetime(day.year, day.month, day.day, h, m, tzinfo=tz, fold=1).astimezone(UTC)
        if a == b:  # an ordinary wall time
            out.append(a)
        elif a.astimezone(tz).replace(tzinfo=None) == datetime(day.year, day.month, day.day, h, m):
            out.append(a)  # overlap: a is the first occurrence, b the second
            if not cs.hour_restricted:
                out.append(b)
        elif cs.hour_restricted:  # gap: fold=0 lands after the gap, shifted by its length
            out.append(a)
    return tuple(out)


def instants(
    spec: str | CronSpec, tz: tzinfo, start: datetime, end: datetime
) -> Iterator[datetime]:
    """Every instant in [start, end) at which the job fires, as aware UTC datetimes, ascending."""
    cs = _spec(spec)
    start, end = _utc(start, "start"), _utc(end, "end")
    # A wall date's instants lie within a day of it (UTC offsets, gap shifts), so look 2 beyond.
    day = start.astimezone(tz).date() - timedelta(days=2)
    last_day = end.astimezone(tz).date() + timedelta(days=2)
    pending: list[datetime] = []
    last = None
    while day <= last_day:
        if cs.matches_day(day):
            pending.extend(_day_instants(cs, tz, day))
            pending.sort()
        # Days after `day` only give instants after this horizon; earlier ones are final.
        horizon = datetime.combine(day, time(), UTC) if day < last_day else end
        k = bisect_left(pending, horizon)
        for t in pending[:k]:
            if t >= end:
                return
            if t >= start and t != last:
                last = t
                yield t
        del pending[:k]
        day += timedelta(days=1)


def next_after(spec: str | CronSpec, tz: tzinfo, after: datetime) -> datetime:
    """The first instant strictly after `after` (any valid spec fires within 9 years)."""
    start = _utc(after, "after") + timedelta(microseconds=1)  # in UTC: `+` drops the fold
    found = next(instants(spec, tz, start, start + timedelta(days=366 * 9)), None)
    if found is None:
        raise ValueError(f"cron spec {_spec(spec).source!r} never fires after {after}")
    return found


def latest_at_or_before(spec: str | CronSpec, tz: tzinfo, at: datetime) -> datetime | None:
    """The last instant <= `at`, looking back at most 370 days; None if there is none.
    The windows grow so that a frequent cron walks few instants (an every-minute one: 60,
    not the 2,880 of two days)."""
    cs = _spec(spec)
    end = _utc(at, "at") + timedelta(microseconds=1)
    for back in (timedelta(hours=1), timedelta(days=2), timedelta(days=35),
                 timedelta(days=370)):
        tail = deque(instants(cs, tz, end - back, end), maxlen=1)
        if tail:
            return tail[0]
    return None


def local_instant(text: str, tz: tzinfo) -> datetime:
    """An ISO 8601 instant as an operator writes one: a date is its local midnight, a time
    without an offset is local. ValueError saying what is expected."""
    try:
        if len(text) == 10:
            instant = datetime.combine(date.fromisoformat(text), time(), tz)
        else:
            instant = datetime.fromisoformat(text)
            instant = instant if instant.tzinfo else instant.replace(tzinfo=tz)
        instant.astimezone(UTC)  # an instant outside datetime's range in UTC is no slot
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r}: expected ISO 8601, like 2026-11-22 or"
                         " 2026-11-22T00:01:00+05:30") from None
    return instant
