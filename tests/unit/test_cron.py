"""workers.engine.cron and workers.engine.periodic: parsing, the instants a job fires at, and what
periodiq's scheduler does with them.

The periodiq simulations replay periodiq 0.14's Scheduler without sleeping: at `now` it sends
every actor whose `periodic` option validates `now`, then wakes up at the earliest of their
next_valid_date(now). The actors' option is ours (workers.engine.periodic.Periodic) as in
production, or periodiq's own CronSpec where a test pins one of its defects.
test_the_replay_matches_periodiq_scheduler_code_run_on_a_fake_clock checks the replay against
periodiq's own Scheduler.schedule().
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pendulum
import periodiq
import pytest

from workers.engine import cron
from workers.engine.periodic import Periodic
from workers.schedule import JOBS

KOLKATA = ZoneInfo("Asia/Kolkata")
PARIS = ZoneInfo("Europe/Paris")
MINUTE = timedelta(minutes=1)
EVERY_MINUTE = "* * * * *"


def at(tz, *fields, fold=0):
    return datetime(*fields, tzinfo=tz, fold=fold)


def walls(instants, tz):
    """Readable local wall clock + offset of each instant: '03-29 03:30+0200'."""
    return [f"{t.astimezone(tz):%m-%d %H:%M%z}" for t in instants]


def fires(spec, tz, start, end):
    return list(cron.instants(spec, tz, start, end))


def _pendulum(moment, tz_name):
    if isinstance(moment, datetime):
        return pendulum.instance(moment).in_timezone(tz_name)
    return pendulum.datetime(*moment, tz=tz_name)  # a local (y, m, d, ...) tuple


def periodiq_own(spec, tz_name):
    return periodiq.cron(spec)


def ours_periodic(spec, tz_name):
    return Periodic(spec, ZoneInfo(tz_name))


def periodiq_fires(specs, tz_name, start, end, option=periodiq_own):
    """periodiq's Scheduler with one actor per spec, from `start` to `end`, each actor's
    `periodic` option made by `option` (periodiq's own CronSpec unless told otherwise).

    `start` and `end` are aware datetimes or local (y, m, d, ...) tuples.
    Returns {spec: [UTC instants at which periodiq sends it]}.
    """
    actors = {spec: option(spec, tz_name) for spec in specs}
    sent = {spec: [] for spec in specs}
    now = _pendulum(start, tz_name)
    stop = _pendulum(end, tz_name).timestamp()
    while now.timestamp() < stop:
        for spec, actor in actors.items():
            if actor.validate(now):
                sent[spec].append(datetime.fromtimestamp(now.timestamp(), UTC))
        now = min(actor.next_valid_date(now) for actor in actors.values())
    return sent


def periodiq_alone(spec, tz_name, start, end, option=periodiq_own):
    return periodiq_fires([spec], tz_name, start, end, option)[spec]


def ours(spec, tz_name, start, end):
    tz = ZoneInfo(tz_name)
    return fires(spec, tz, datetime(*start, tzinfo=tz), datetime(*end, tzinfo=tz))


def assert_same_instants(got, expected, tz):
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert (walls(missing[:5], tz), walls(extra[:5], tz)) == ([], [])
    assert got == expected  # same order, no duplicates either


# --- parsing -------------------------------------------------------------------------------


def test_parse_reads_numbers_and_wildcards_into_value_sets():
    spec = cron.parse("5 4 * * *")
    assert spec.minutes == {5} and spec.hours == {4}
    assert spec.days == set(range(1, 32)) and spec.months == set(range(1, 13))
    assert spec.weekdays == set(range(1, 8))
    assert (spec.dom_restricted, spec.dow_restricted, spec.hour_restricted) == (False, False, True)


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ("1-5 * * * *", "minutes", {1, 2, 3, 4, 5}),
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("10-30/10 * * * *", "minutes", {10, 20, 30}),
        ("1,2,59 * * * *", "minutes", {1, 2, 59}),
        ("0 */6 * * *", "hours", {0, 6, 12, 18}),
        ("0 9-17/4,23 * * *", "hours", {9, 13, 17, 23}),
        ("0 0 1,15,31 * *", "days", {1, 15, 31}),
        ("0 0 1 jan,Mar-may *", "months", {1, 3, 4, 5}),
        ("0 0 1 DEC *", "months", {12}),
        ("0 0 1 */3 *", "months", {1, 4, 7, 10}),
        ("0 0 * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
        ("0 0 * * MON,sat", "weekdays", {1, 6}),
        ("0 0 * * 7", "weekdays", {7}),
        ("0 0 * * 5-7", "weekdays", {5, 6, 7}),
        ("0 0 * * 1-7/2", "weekdays", {1, 3, 5, 7}),
        ("  0   0 * * 1  ", "weekdays", {1}),
    ],
)
def test_parse_accepts_each_field_form(spec, field, expected):
    assert getattr(cron.parse(spec), field) == expected


@pytest.mark.parametrize(
    ("alias", "expansion"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_parse_accepts_aliases_as_their_expansion(alias, expansion):
    assert cron.parse(alias) == cron.parse(expansion)


@pytest.mark.parametrize(
    ("hour_field", "restricted"),
    [("*", False), ("*/2", False), ("0-23", False), ("0-23/3", False)]
    + [("2", True), ("1-5", True), ("0,12", True), ("*/2,3", True)],
)
def test_parse_marks_only_whole_range_hour_fields_as_following_real_time(hour_field, restricted):
    assert cron.parse(f"0 {hour_field} * * *").hour_restricted is restricted


def test_parse_marks_day_fields_restricted_unless_they_cover_the_whole_range():
    assert not cron.parse("0 0 1-31 * 1-7").dom_restricted
    assert not cron.parse("0 0 1-31 * 1-7").dow_restricted
    assert cron.parse("0 0 13 * fri").dom_restricted
    assert cron.parse("0 0 13 * fri").dow_restricted


def test_matches_day_follows_the_vixie_rule_when_both_day_fields_are_restricted():
    friday_13, friday_6, tuesday_13 = date(2026, 2, 13), date(2026, 2, 6), date(2026, 1, 13)
    both = cron.parse("0 0 13 * 5")
    assert both.matches_day(friday_13) and both.matches_day(friday_6)
    assert both.matches_day(tuesday_13) and not both.matches_day(date(2026, 2, 7))
    assert not cron.parse("0 0 13 * *").matches_day(friday_6)
    assert not cron.parse("0 0 * * 5").matches_day(tuesday_13)
    assert not cron.parse("0 0 13 3 5").matches_day(friday_13)  # February is not March


@pytest.mark.parametrize("spec", ["", "* * * *", "* * * * * *", "0 0 1 1"])
def test_parse_rejects_a_wrong_field_count(spec):
    with pytest.raises(ValueError, match=r"expected 5 fields .*, got \d"):
        cron.parse(spec)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 0 *", "month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("0-60 * * * *", "minute"),
    ],
)
def test_parse_rejects_out_of_range_values_naming_the_field(spec, field):
    with pytest.raises(ValueError, match=rf"{field} field .* is out of range"):
        cron.parse(spec)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("x * * * *", "bad token 'x'"),
        ("1-x * * * *", "bad token 'x'"),
        ("-1 * * * *", "bad token ''"),
        ("1,,2 * * * *", "bad token ''"),
        ("*/0 * * * *", "bad step"),
        ("*/x * * * *", "bad step"),
        ("5/15 * * * *", "a step needs '\\*' or a range"),
        ("30-10 * * * *", "reversed range"),
        ("0 0 1 janv *", "bad token 'janv'"),
        ("0 0 * * monday", "bad token 'monday'"),
        ("0 0 * jan mon", None),  # names work in their own field only...
        ("0 0 jan * *", "bad token 'jan'"),  # ...not in another
        ("@fortnightly", "unknown alias"),
        ("@Daily", "unknown alias"),  # periodiq's alias lookup is case-sensitive too
        ("0 0 31 2 *", "day-of-month never occurs"),
        ("0 0 30,31 feb *", "day-of-month never occurs"),
    ],
)
def test_parse_rejects_bad_tokens_with_a_one_line_message_naming_the_spec(spec, problem):
    if problem is None:
        cron.parse(spec)
        return
    with pytest.raises(ValueError, match=problem) as caught:
        cron.parse(spec)
    message = str(caught.value)
    assert repr(spec) in message and "\n" not in message


def test_parse_accepts_feb_29_and_a_31st_that_some_months_have():
    assert cron.parse("0 0 29 2 *").days == {29}
    assert cron.parse("0 0 31 1-12 *").months == set(range(1, 13))
    assert cron.parse("0 0 31 2 mon").weekdays == {1}  # vixie: fires on Mondays in February


@pytest.mark.parametrize(
    ("spec", "weekdays"),
    [("0 0 * * 0", {7}), ("0 0 * * sun", {7}), ("0 0 * * SUN", {7}), ("@weekly", {7}),
     ("0 0 * * 0-6", {1, 2, 3, 4, 5, 6, 7}), ("0 0 * * mon-sun", None),
     ("0 0 * * 1,0", {1, 7}), ("0 0 * * */2", {7, 2, 4, 6})],
)
def test_parse_reads_0_sun_and_weekly_as_sunday(spec, weekdays):
    if weekdays is None:  # a range must go upwards: sun is 0
        with pytest.raises(ValueError, match="reversed range"):
            cron.parse(spec)
    else:
        assert cron.parse(spec).weekdays == weekdays


def test_periodiq_alone_never_fires_day_of_week_0_but_ours_does():
    window = ("Asia/Kolkata", (2026, 1, 1), (2026, 3, 1))
    assert periodiq_alone("0 12 * * 0", *window) == []
    sundays = periodiq_alone("0 12 * * 0", *window, option=ours_periodic)
    assert walls(sundays[:2], KOLKATA) == ["01-04 12:00+0530", "01-11 12:00+0530"]
    assert sundays == ours("0 12 * * 0", *window)


def test_parse_accepts_7_as_sunday_and_periodiq_fires_it_on_sundays():
    assert cron.parse("0 12 * * 7").weekdays == {7}
    expected = ours("0 12 * * 7", "Asia/Kolkata", (2026, 1, 1), (2026, 3, 1))
    assert walls(expected[:2], KOLKATA) == ["01-04 12:00+0530", "01-11 12:00+0530"]
    assert len(expected) == 8
    assert periodiq_alone("0 12 * * 7", "Asia/Kolkata", (2026, 1, 1), (2026, 3, 1)) == expected


# --- instants, next_after, latest_at_or_before ---------------------------------------------


def test_instants_in_kolkata_are_half_an_hour_off_the_utc_hour():
    got = fires("*/5 * * * *", KOLKATA, at(KOLKATA, 2026, 1, 1), at(KOLKATA, 2026, 1, 1, 0, 20))
    assert got == [datetime(2025, 12, 31, 18, m, tzinfo=UTC) for m in (30, 35, 40, 45)]
    assert all(t.tzinfo is UTC for t in got)
    daily = fires("1 0 * * *", KOLKATA, at(KOLKATA, 2026, 1, 1), at(KOLKATA, 2026, 1, 4))
    assert daily == [
        datetime(2025, 12, 31, 18, 31, tzinfo=UTC),
        datetime(2026, 1, 1, 18, 31, tzinfo=UTC),
        datetime(2026, 1, 2, 18, 31, tzinfo=UTC),
    ]


def test_instants_include_start_and_exclude_end():
    start = at(KOLKATA, 2026, 5, 1, 10, 0)
    got = fires("*/5 * * * *", KOLKATA, start, start + timedelta(minutes=10))
    assert got == [start, start + timedelta(minutes=5)]
    assert fires("*/5 * * * *", KOLKATA, start, start) == []
    assert fires("*/5 * * * *", KOLKATA, start + MINUTE, start) == []


def test_instants_accept_a_parsed_spec_and_refuse_naive_bounds():
    start = at(KOLKATA, 2026, 5, 1)
    parsed = cron.parse("0 * * * *")
    assert fires(parsed, KOLKATA, start, start + timedelta(hours=3)) == fires(
        "0 * * * *", KOLKATA, start, start + timedelta(hours=3)
    )
    with pytest.raises(ValueError, match="start must be an aware datetime"):
        fires(parsed, KOLKATA, datetime(2026, 5, 1), start)
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        cron.next_after(parsed, KOLKATA, datetime(2026, 5, 1))
    with pytest.raises(ValueError, match="at must be an aware datetime"):
        cron.latest_at_or_before(parsed, KOLKATA, datetime(2026, 5, 1))


def test_every_5_minutes_skips_the_paris_spring_forward_gap():
    got = fires("*/5 * * * *", PARIS, at(PARIS, 2026, 3, 29, 1, 50), at(PARIS, 2026, 3, 29, 3, 15))
    assert walls(got, PARIS) == [
        "03-29 01:50+0100",
        "03-29 01:55+0100",
        "03-29 03:00+0200",
        "03-29 03:05+0200",
        "03-29 03:10+0200",
    ]
    assert len(fires("*/5 * * * *", PARIS, at(PARIS, 2026, 3, 29), at(PARIS, 2026, 3, 30))) == 276


def test_every_5_minutes_runs_the_paris_fall_back_hour_twice():
    got = fires("*/5 * * * *", PARIS, at(PARIS, 2026, 10, 25, 2, 50), at(PARIS, 2026, 10, 25, 3))
    assert walls(got, PARIS) == [
        "10-25 02:50+0200",
        "10-25 02:55+0200",
        "10-25 02:00+0100",
        "10-25 02:05+0100",
    ] + [f"10-25 02:{m:02}+0100" for m in range(10, 60, 5)]
    assert len(fires("*/5 * * * *", PARIS, at(PARIS, 2026, 10, 25), at(PARIS, 2026, 10, 26))) == 300


def test_fixed_time_in_the_paris_spring_forward_gap_fires_shifted_by_the_gap():
    got = fires("30 2 * * *", PARIS, at(PARIS, 2026, 3, 28), at(PARIS, 2026, 3, 31))
    assert walls(got, PARIS) == ["03-28 02:30+0100", "03-29 03:30+0200", "03-30 02:30+0200"]


def test_fixed_time_in_the_paris_fall_back_overlap_fires_once_at_the_first_occurrence():
    got = fires("30 2 * * *", PARIS, at(PARIS, 2026, 10, 24), at(PARIS, 2026, 10, 27))
    assert walls(got, PARIS) == ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"]
    assert got[1] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_gap_shifted_slot_landing_on_a_real_slot_fires_once():
    got = fires("30 2,3 * * *", PARIS, at(PARIS, 2026, 3, 29), at(PARIS, 2026, 3, 30))
    assert walls(got, PARIS) == ["03-29 03:30+0200"]


def test_a_31st_never_fires_in_a_30_day_month():
    got = fires("0 0 31 * *", KOLKATA, at(KOLKATA, 2026, 1, 1), at(KOLKATA, 2027, 1, 1))
    assert [t.astimezone(KOLKATA).month for t in got] == [1, 3, 5, 7, 8, 10, 12]
    assert fires("0 0 30 * *", KOLKATA, at(KOLKATA, 2026, 2, 1), at(KOLKATA, 2026, 3, 1)) == []


def test_feb_29_fires_only_in_the_leap_year_2028():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = cron.next_after("0 12 29 2 *", KOLKATA, start)
    assert walls([first], KOLKATA) == ["02-29 12:00+0530"] and first.year == 2028
    assert len(fires("0 0 * 2 *", KOLKATA, at(KOLKATA, 2028, 2, 1), at(KOLKATA, 2028, 3, 1))) == 29
    assert len(fires("0 0 * 2 *", KOLKATA, at(KOLKATA, 2026, 2, 1), at(KOLKATA, 2026, 3, 1))) == 28
    assert cron.latest_at_or_before("0 12 29 2 *", KOLKATA, at(KOLKATA, 2028, 3, 1)) == first
    assert cron.latest_at_or_before("0 12 29 2 *", KOLKATA, at(KOLKATA, 2027, 6, 1)) is None


def test_next_after_is_strictly_after():
    slot = at(KOLKATA, 2026, 4, 1, 0, 1)
    assert cron.next_after("1 0 * * *", KOLKATA, slot) == slot + timedelta(days=1)
    assert cron.next_after("1 0 * * *", KOLKATA, slot - timedelta(microseconds=1)) == slot
    assert cron.next_after("*/5 * * * *", KOLKATA, slot) == at(KOLKATA, 2026, 4, 1, 0, 5)


def test_next_after_crosses_paris_dst_changes():
    saturday = at(PARIS, 2026, 3, 28, 3)
    assert walls([cron.next_after("30 2 * * *", PARIS, saturday)], PARIS) == ["03-29 03:30+0200"]
    slot = at(PARIS, 2026, 10, 25, 2, 55)
    assert walls([cron.next_after("*/5 * * * *", PARIS, slot)], PARIS) == ["10-25 02:00+0100"]


def test_latest_at_or_before_includes_the_instant_itself():
    slot = at(KOLKATA, 2026, 4, 1, 0, 1)
    assert cron.latest_at_or_before("1 0 * * *", KOLKATA, slot) == slot
    earlier = cron.latest_at_or_before("1 0 * * *", KOLKATA, slot - timedelta(microseconds=1))
    assert earlier == slot - timedelta(days=1)
    monthly = cron.latest_at_or_before("@monthly", KOLKATA, slot - MINUTE)
    assert monthly == at(KOLKATA, 2026, 4, 1)
    yearly = cron.latest_at_or_before("@yearly", KOLKATA, slot)
    assert yearly == at(KOLKATA, 2026, 1, 1)


def test_latest_at_or_before_in_the_paris_fall_back_overlap():
    second_203 = at(PARIS, 2026, 10, 25, 2, 3, fold=1)
    latest = cron.latest_at_or_before("*/5 * * * *", PARIS, second_203)
    assert walls([latest], PARIS) == ["10-25 02:00+0100"]
    latest = cron.latest_at_or_before("30 2 * * *", PARIS, at(PARIS, 2026, 10, 25, 2, 45, fold=1))
    assert latest == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "spec", ["*/5 * * * *", "30 2 * * *", "0 1-5 * * *", "*/20 2 * * *", "0 0 13 * 5"]
)
def test_instants_are_strictly_ascending_across_both_paris_dst_changes(spec):
    for month, day in ((3, 26), (10, 22)):
        start = at(PARIS, 2026, month, day)
        got = fires(spec, PARIS, start, start + timedelta(days=7))
        assert got and all(a < b for a, b in zip(got, got[1:], strict=False))


# --- independent brute-force oracle ----------------------------------------------------------


def _wall_matches(spec, wall):
    if wall.minute not in spec.minutes or wall.hour not in spec.hours:
        return False
    if wall.month not in spec.months:
        return False
    dom, dow = wall.day in spec.days, wall.isoweekday() in spec.weekdays
    return (dom or dow) if spec.dom_restricted and spec.dow_restricted else (dom and dow)


def brute_force(specs, tz, start, end):
    """Step through every UTC minute of [start, end) and read the local wall clock.

    A spec fires when the wall clock matches it; a fixed-hour spec only on the first reading of
    a repeated wall time, and at (wall time + gap) for wall times a spring-forward gap skipped.
    """
    parsed = {s: cron.parse(s) for s in specs}
    found = {s: set() for s in specs}
    u = start.astimezone(UTC)
    previous_offset = (u - MINUTE).astimezone(tz).utcoffset()
    while u < end:
        wall = u.astimezone(tz)
        jump = wall.utcoffset() - previous_offset
        previous_offset = wall.utcoffset()
        naive = wall.replace(tzinfo=None)
        for s, spec in parsed.items():
            if _wall_matches(spec, naive) and not (spec.hour_restricted and wall.fold):
                found[s].add(u)
            if spec.hour_restricted and jump > timedelta(0):
                for k in range(jump // MINUTE):
                    if _wall_matches(spec, naive - jump + k * MINUTE):
                        found[s].add(u + k * MINUTE)
        u += MINUTE
    return {s: sorted(found[s]) for s in specs}


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        (PARIS, (2026, 3, 1), (2026, 4, 1)),  # spring forward on 03-29
        (PARIS, (2026, 10, 1), (2026, 11, 1)),  # fall back on 10-25
        (KOLKATA, (2025, 12, 15), (2026, 1, 15)),
    ],
    ids=["Paris-March", "Paris-October", "Kolkata-new-year"],
)
def test_instants_match_a_minute_by_minute_brute_force_oracle(tz, start, end):
    specs = ["*/5 * * * *", "1 0 * * *", "0 1 * * *", "30 2 * * *", "0 2-3 * * 7", "20 */3 * * *"]
    start, end = at(tz, *start), at(tz, *end)
    expected = brute_force(specs, tz, start, end)
    for spec in specs:
        assert_same_instants(fires(spec, tz, start, end), expected[spec], tz)


# --- periodiq scheduling the job table ---------------------------------------------------

JOB_SPECS = sorted({job.cron for job in JOBS.values()})
ZONES = ("Asia/Kolkata", "Europe/Paris")


class _FakeActor:
    def __init__(self, spec, option=ours_periodic):
        self.options = {"periodic": option(spec, "Europe/Paris")}
        self.sent = []

    def send_with_options(self, scheduled_at):
        self.sent.append(pendulum.parse(scheduled_at).in_timezone("UTC"))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        (datetime(2026, 10, 24, 23, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
@pytest.mark.parametrize("option", [ours_periodic, periodiq_own], ids=["ours", "periodiq's"])
def test_the_replay_matches_periodiq_scheduler_code_run_on_a_fake_clock(
        monkeypatch, start, end, option):
    clock = [pendulum.instance(start)]

    def advance(seconds):
        clock[0] = clock[0] + timedelta(seconds=seconds)

    monkeypatch.setattr(periodiq.pendulum, "now", lambda *_: clock[0].in_timezone("Europe/Paris"))
    monkeypatch.setattr(periodiq, "sleep", advance)
    monkeypatch.setattr(periodiq, "alarm", advance)
    monkeypatch.setattr(periodiq, "signal", lambda *_: None)
    actors = [_FakeActor(spec, option) for spec in JOB_SPECS]
    scheduler = periodiq.Scheduler(actors=actors)
    while clock[0] < end:
        scheduler.schedule()
    replayed = periodiq_fires(JOB_SPECS, "Europe/Paris", start, end, option)
    for spec, actor in zip(JOB_SPECS, actors, strict=True):
        assert actor.sent == replayed[spec]


@pytest.mark.slow
@pytest.mark.parametrize("tz_name", ZONES)
@pytest.mark.parametrize("spec", JOB_SPECS)
def test_periodiq_fires_each_job_spec_at_exactly_its_instants_through_2026(spec, tz_name):
    year = ((2026, 1, 1), (2027, 1, 1))
    got = periodiq_alone(spec, tz_name, *year, option=ours_periodic)
    assert_same_instants(got, ours(spec, tz_name, *year), ZoneInfo(tz_name))


@pytest.mark.parametrize(
    "window",
    [((2026, 3, 28, 22), (2026, 3, 30, 2)), ((2026, 10, 24, 22), (2026, 10, 26, 2))],
    ids=["spring-forward", "fall-back"],
)
def test_periodiq_with_the_whole_job_table_fires_each_job_at_its_instants_over_paris_dst(window):
    # One Scheduler for all jobs, as in production.
    sent = periodiq_fires(JOB_SPECS, "Europe/Paris", *window, option=ours_periodic)
    for spec in JOB_SPECS:
        assert_same_instants(sent[spec], ours(spec, "Europe/Paris", *window), PARIS)


# --- periodiq 0.14's own CronSpec: the defects that made us replace it (engine.periodic) ---


def test_periodiq_skips_a_2_30_job_on_spring_forward_day_and_runs_it_twice_on_fall_back():
    spring, fall = ((2026, 3, 27), (2026, 3, 31)), ((2026, 10, 23), (2026, 10, 27))
    assert walls(periodiq_alone("30 2 * * *", "Europe/Paris", *spring), PARIS) == [
        "03-27 02:30+0100",
        "03-28 02:30+0100",
        "03-30 02:30+0200",  # nothing on 03-29
    ]
    assert walls(ours("30 2 * * *", "Europe/Paris", *spring), PARIS) == [
        "03-27 02:30+0100",
        "03-28 02:30+0100",
        "03-29 03:30+0200",
        "03-30 02:30+0200",
    ]
    assert walls(periodiq_alone("30 2 * * *", "Europe/Paris", *fall), PARIS) == [
        "10-23 02:30+0200",
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-25 02:30+0100",  # twice on 10-25
        "10-26 02:30+0100",
    ]
    assert walls(ours("30 2 * * *", "Europe/Paris", *fall), PARIS) == [
        "10-23 02:30+0200",
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]
    night = ((2026, 3, 29), (2026, 3, 29, 6))
    with_minutely = periodiq_fires(["30 2 * * *", EVERY_MINUTE], "Europe/Paris", *night)
    assert with_minutely["30 2 * * *"] == []  # another actor waking periodiq does not help


@pytest.mark.parametrize(
    ("spec", "skipped"), [("1 0 * * *", "03-30 00:01+0200"), ("0 12 * * *", "03-29 12:00+0200")]
)
def test_periodiq_alone_misses_a_daily_slot_after_spring_forward(spec, skipped):
    # From a slot, periodiq adds the hours to the next day's slot in absolute time (23 h, not
    # a wall-clock day), so it lands an hour late after the clocks went forward.
    window = ((2026, 3, 28, 6), (2026, 3, 30, 6))
    alone = walls(periodiq_alone(spec, "Europe/Paris", *window), PARIS)
    expected = walls(ours(spec, "Europe/Paris", *window), PARIS)
    assert skipped in expected and [w for w in expected if w != skipped] == alone
    # Another actor waking periodiq every minute hides it.
    shared = periodiq_fires([spec, EVERY_MINUTE], "Europe/Paris", *window)[spec]
    assert walls(shared, PARIS) == expected


def test_periodiq_alone_fires_a_multi_slot_sunday_spec_once_per_sunday():
    # On a Sunday, next_valid_date reads the weekday as 0 and jumps to the next listed day.
    window = ((2026, 1, 1), (2026, 1, 19))
    assert walls(periodiq_alone("0 9,18 * * 7", "Asia/Kolkata", *window), KOLKATA) == [
        "01-04 09:00+0530",
        "01-11 18:00+0530",
        "01-18 09:00+0530",
    ]
    assert len(ours("0 9,18 * * 7", "Asia/Kolkata", *window)) == 6


def test_periodiq_alone_skips_the_1st_of_a_restricted_month():
    # The month jump adds whole months' days without going back to day 1.
    window = ((2026, 1, 1), (2026, 4, 1))
    alone = periodiq_alone("0 0 * 3 *", "Asia/Kolkata", *window)
    assert walls(alone[:1], KOLKATA) == ["03-02 00:00+0530"]
    assert walls(ours("0 0 * 3 *", "Asia/Kolkata", *window)[:1], KOLKATA) == ["03-01 00:00+0530"]


def test_periodiq_with_several_actors_skips_minutes_before_the_fall_back():
    # Scheduler.schedule() takes the earliest next_valid_date() of its actors, but pendulum
    # datetimes of one zone compare by wall clock (Python ignores fold for a shared tzinfo):
    # at 02:50 CEST, '*/10' offers 02:00 CET (later in real time, earlier on the wall), which
    # wins, so periodiq sleeps through 02:51-02:59 CEST.
    start = at(PARIS, 2026, 10, 25, 2, 40)  # CEST
    stop = at(PARIS, 2026, 10, 25, 2, 20, fold=1)  # CET, 40 minutes later
    sent = periodiq_fires(["* * * * *", "*/10 * * * *"], "Europe/Paris", start, stop)
    expected = fires("* * * * *", PARIS, start, stop)
    assert len(expected) == 40
    skipped = [f"10-25 02:{m}+0200" for m in range(51, 60)]
    assert walls(sent["* * * * *"], PARIS) == [
        w for w in walls(expected, PARIS) if w not in skipped
    ]
