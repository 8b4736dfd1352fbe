"""Fuzzing the bad input the workers accept from outside: the operator's command line and
the messages on the Redis queues. Every bad input must get a clear error, write nothing,
and (a message) be dead-lettered at once, never retried.

1. CLI arguments, in-process through `workers.cli.main`: valid subcommands, job names and
   flags mixed with random text, huge numbers, ISO-ish timestamps (valid, malformed, out of
   datetime's range once converted to UTC), `--limit` values and `params --set/--unset`
   overrides (known and unknown names, JSON and junk values). `main` returns 0, 1, 2 or 3
   or argparse exits with 2; nothing else escapes, stderr has no traceback, an exit 2 says
   why and writes no `job_runs` row.
2. Message payloads through a real Dramatiq worker: batches of invalid payloads for every
   job actor (wrong types for `scheduled_for`, naive times, garbage, unknown keywords,
   positional arguments, bad `scheduled_at` options). Each is refused with InvalidMessage,
   nacked once into the queue's dead-letter set, never re-enqueued, and writes nothing.
   Only invalid payloads are generated (valid ones are excluded by construction, not
   filtered through the code under test): `{}`, `{"scheduled_for": None}` and aware ISO
   times inside datetime's range are valid, and so is a valid `scheduled_for` beside any
   `scheduled_at` (the keyword wins, as documented), so none of those is drawn.
3. A message for an actor that does not exist: Dramatiq 2.2.1's consumer thread
   (worker.py, ConsumerThread.handle_message) logs "Received message for undefined actor
   ... Moving it to the DLQ.", fails the message with ActorNotFound and nacks it, so it is
   dead-lettered once; the worker goes on.

Inputs the fuzzing found mishandled are pinned at the end as strict xfails and left out of
the generators above (see BUGS below).
"""

import threading
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone

import dramatiq
import pytest
import redis
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import workers
import workers.cli
from workers.engine import runtime
from workers.errors import InvalidMessage
from workers.schedule import JOBS

#: How long a test waits for the worker to drain a queue (milliseconds).
DRAIN_TIMEOUT_MS = 30_000
QUEUES = sorted({job.queue for job in JOBS.values()})
JOB_NAMES = list(JOBS)
BIGINT_MAX = 2**63 - 1

# --------------------------------------------------------------------------------------
# shared strategies

#: Any text but lone surrogates (an in-process capsys stream cannot encode them; the real
#: stderr escapes them), at most 20 characters.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
#: Text with no digit at all: no datetime, no unix timestamp, whatever a parser tries.
NO_DIGITS = st.text(st.characters(blacklist_categories=("Cs", "Nd", "No", "Nl")), max_size=20)
OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
AWARE = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                     timezones=OFFSETS)
NAIVE = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))
OFFSET_TEXT = st.sampled_from(["", "Z", "+05:30", "-14:00", "+23:59", "+00:00"])


@st.composite
def impossible_isoish(draw) -> str:
    """Looks like ISO 8601, but one component is out of its range."""
    parts = {"year": draw(st.integers(1, 9999)), "month": draw(st.integers(1, 12)),
             "day": draw(st.integers(1, 28)), "hour": draw(st.integers(0, 23)),
             "minute": draw(st.integers(0, 59))}
    broken = draw(st.sampled_from(["month", "day", "hour", "minute", "offset"]))
    if broken != "offset":
        low = {"month": 13, "day": 32, "hour": 25, "minute": 60}[broken]
        parts[broken] = draw(st.integers(low, 99))
        offset = draw(OFFSET_TEXT)
    else:
        offset = f"+{draw(st.integers(24, 99)):02d}:00"
    return ("{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00".format(**parts)
            + offset)


JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(10**40), 10**40)
                | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(JSON_SCALARS,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)

# --------------------------------------------------------------------------------------
# 1. CLI arguments


def _no_help(token: str) -> bool:
    """-h/--help (or an abbreviation) prints help and exits 0: valid usage, not fuzzed."""
    return not (token.startswith("-h") or token.startswith("--h"))


JUNK = TEXT.filter(_no_help)
UNKNOWN_JOB = JUNK.filter(lambda text: text not in JOBS) | st.sampled_from(
    ["no_such_job", "COIN_DEDUCTION", "coin_deduction ", "coin-deduction", "", "billing"])
AS_OF = st.one_of(
    AWARE.map(datetime.isoformat),
    NAIVE.map(datetime.isoformat),  # local time
    st.dates().map(date.isoformat),  # local midnight, year 1 to 9999
    impossible_isoish(),
    st.sampled_from([
        "0001-01-01", "9999-12-31", "0001-01-01T00:00:00+05:30", "0001-01-01T00:00:00-23:59",
        "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59+14:00", "0000-01-01",
        "10000-01-01", "", " ", "now", "today", "2026-02-30", "2026-11-22T24:00",
        "2026-11-22T10:00+24:00", "2026-11-22T10:00:00Z", "+002026-11-22",
        "2026-11-22T10:00:00.123456789+05:30", "2026-11-22\x00", "1700000000",
    ]),
    JUNK,
)
LIMIT = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(-5, 50).map(str),
    st.integers(1, 50).map(str),
    st.sampled_from(["0", "-1", "", "abc", "1.5", "1e3", " 7 ", "\u0663", "0x10", "1_0",
                     str(BIGINT_MAX), "--json"]),
    JUNK,
)


def _optional(strategy):
    return st.none() | strategy


def _rarely() -> st.SearchStrategy[bool]:
    return st.sampled_from([False, False, False, True])


def _mostly(usual, unusual):
    """usual three times in four (st.one_of would draw them about evenly)."""
    return _rarely().flatmap(lambda rare: unusual if rare else usual)


JOB_ARG = _mostly(st.sampled_from(JOB_NAMES), UNKNOWN_JOB)
PARAMETER = _mostly(st.sampled_from(["heartbeat_timeout_seconds", "presence_inactive_minutes",
                                     "log_dir", "log_retention_days",
                                     "job_runs_retention_days"]), JUNK)
VALUE = st.one_of(st.integers(-(10**20), 10**20).map(str), JUNK,
                  st.sampled_from(["null", "true", "90", '"90"', "[]", "{}", "1.5", "1e400",
                                   "NaN", "/tmp", ""]))


@st.composite
def structured_argv(draw) -> list[str]:
    """A subcommand with its arguments, each of them valid or not."""
    command = draw(st.sampled_from(["run-task", "history", "pause", "resume", "status", "db",
                                    "params"]))
    argv = [command]
    if command == "run-task":
        argv.append(draw(JOB_ARG))
        as_of = draw(_optional(AS_OF))
        if as_of is not None:
            argv += ["--as-of", as_of]
        if draw(st.booleans()):
            argv.append("--enqueue")
    elif command == "history":
        job = draw(_optional(JOB_ARG))
        if job is not None:
            argv.append(job)
        limit = draw(_optional(LIMIT))
        if limit is not None:
            argv += ["--limit", limit]
        if draw(st.booleans()):
            argv.append("--json")
    elif command in ("pause", "resume"):
        argv.append(draw(JOB_ARG))
    elif command == "status":
        if draw(st.booleans()):
            argv.append("--json")
    elif command == "params":
        argv.append(draw(JOB_ARG))
        for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
            if draw(st.booleans()):
                argv += ["--set", f"{draw(PARAMETER)}={draw(VALUE)}"]
            else:
                argv += ["--unset", draw(PARAMETER)]
        if draw(st.booleans()):
            argv.append("--json")
    else:
        argv.append(draw(st.sampled_from(["init"]) | JUNK))
    # now and then: arguments shuffled, or a stray token or two
    tokens = list(draw(st.permutations(argv[1:]))) if draw(_rarely()) else argv[1:]
    stray = JUNK | st.sampled_from(["--json", "--enqueue", "--as-of", "--limit", *JOB_NAMES])
    extra = [draw(stray) for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2])))]
    return [command, *tokens, *extra]


CHAOS_ARGV = st.lists(
    st.sampled_from(["run-task", "history", "pause", "resume", "status", "db", "init",
                     "params", "--set", "--unset", "--as-of", "--enqueue", "--json", "--limit",
                     *JOB_NAMES])
    | JUNK | AS_OF | LIMIT
    | st.integers(-(10**40), 10**40).map(str),
    max_size=7,
)
CLI_ARGV = _mostly(structured_argv(), CHAOS_ARGV)


def count_rows(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def call_cli(argv: list[str], capsys) -> tuple[int | str, str, str]:
    """main's exit code ("argparse 2" for argparse's SystemExit(2)), stdout and stderr."""
    capsys.readouterr()
    try:
        code = workers.cli.main(argv, runtime.current().settings)
    except SystemExit as exit_:
        assert exit_.code == 2, f"argparse exited {exit_.code!r} for {argv!r}"
        code = "argparse 2"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=CLI_ARGV)
def test_the_cli_answers_any_arguments_with_an_exit_code_and_a_clear_line(conn, capsys,
                                                                         argv):
    runs_before = count_rows(conn, "job_runs")

    code, out, err = call_cli(argv, capsys)

    event(f"exit {code}")
    code = 2 if code == "argparse 2" else code
    assert code in {0, 1, 2, 3}, (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    if code == 2:
        assert count_rows(conn, "job_runs") == runs_before, argv
        assert err.strip(), f"exit 2 without a reason for {argv!r}"
        assert err.startswith("saathii-workers: ") or "error:" in err, (argv, err)
    if code == 3:  # the services are up: this must not happen, and must say why if it does
        assert err.startswith("saathii-workers: "), (argv, err)
        pytest.fail(f"exit 3 with PostgreSQL and Redis up: {argv!r}: {err}")


# --------------------------------------------------------------------------------------
# 2. message payloads through a real worker


class Outcomes(Middleware):
    """How the worker finished each message, by redis_message_id: nacked (dead-lettered),
    acked, and any re-enqueue with a delay (a retry)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.finished: dict[str, list[dict]] = {}
        self.retries: list[str] = []

    def _finish(self, how: str, message) -> None:
        with self.lock:
            self.finished.setdefault(message.options.get("redis_message_id"), []).append({
                "how": how, "actor": message.actor_name,
                "retries": message.options.get("retries"),
                "exception": getattr(message, "_exception", None),
            })

    def after_nack(self, broker, message):
        self._finish("nack", message)

    def after_ack(self, broker, message):
        self._finish("ack", message)

    def after_enqueue(self, broker, message, delay):
        if delay is not None:
            with self.lock:
                self.retries.append(message.message_id)

    def wait_for(self, ids: set[str], timeout: float = 5.0) -> None:
        """broker.join returns once Redis forgot a message, a moment before after_nack."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if ids <= self.finished.keys():
                    return
            time.sleep(0.02)


@contextmanager
def running_worker():
    """A real Dramatiq worker on workers.broker, in this process, reporting its Outcomes."""
    outcomes = Outcomes()
    workers.broker.add_middleware(outcomes)
    worker = dramatiq.Worker(workers.broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        yield outcomes
    finally:
        worker.stop()
        # a Worker adds its own middleware to the broker; the next worker adds another
        workers.broker.middleware[:] = [m for m in workers.broker.middleware
                                        if m is not outcomes
                                        and getattr(m, "worker", None) is not worker]


@pytest.fixture
def worker(db):
    with running_worker() as outcomes:
        yield outcomes


def drain(*queues: str) -> None:
    for queue in queues:
        workers.broker.join(queue, timeout=DRAIN_TIMEOUT_MS)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(runtime.current().settings.redis_url)


def dead_letters(queue: str) -> set[str]:
    with redis_client() as client:
        return {key.decode() for key in client.zrange(f"dramatiq:{queue}.XQ", 0, -1)}


def forget_dead_letters() -> None:
    with redis_client() as client:
        for queue in QUEUES:
            client.delete(f"dramatiq:{queue}.XQ", f"dramatiq:{queue}.XQ.msgs")


def aware_now_ish() -> st.SearchStrategy[str]:
    """A valid scheduled_for, for payloads whose fault lies elsewhere."""
    return st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1),
                        timezones=OFFSETS).map(datetime.isoformat)


#: scheduled_for values that are no aware ISO 8601 time in datetime's range. Numbers
#: within unix-time range are left out: pydantic takes them as timestamps (BUGS below).
BAD_SCHEDULED_FOR = st.one_of(
    st.booleans(),
    st.integers(min_value=10**15) | st.integers(max_value=-(10**15)),
    st.sampled_from([10**30, -(10**30), float("nan"), float("inf"), float("-inf")]),
    st.floats(min_value=1e15, allow_infinity=False)
    | st.floats(max_value=-1e15, allow_infinity=False),
    st.lists(JSON, max_size=3),
    st.dictionaries(TEXT, JSON, max_size=3),
    NAIVE.map(datetime.isoformat),
    st.builds(lambda moment, sep: moment.isoformat(sep=sep), NAIVE, st.sampled_from(" T")),
    st.dates().map(date.isoformat),
    impossible_isoish(),
    NO_DIGITS,
    st.sampled_from(["", "now", "today", "yesterday", "0000-01-01T00:00:00Z",
                     "2026-11-22T10:00:00+25:00", "2026-11-22T10:00:00 Z"]),
)
#: Keyword names the actors do not take. "self" is left out: Dramatiq's own Actor.__call__
#: chokes on it before the actor validates anything (BUGS below).
UNKNOWN_KEY = (TEXT.filter(lambda key: key not in ("scheduled_for", "self"))
               | st.sampled_from(["scheduled_at", "Scheduled_For", "scheduled_for ", "args",
                                  "kwargs", "message", "slot", "as_of"]))
#: scheduled_at option values periodiq never writes, none of them a stale instant (which
#: periodiq's middleware drops on purpose, acked: test_actors pins that).
BAD_SCHEDULED_AT = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**40), 10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(JSON, max_size=3), st.dictionaries(TEXT, JSON, max_size=3),
    NO_DIGITS,
    impossible_isoish(),
    # naive, and in the future whether periodiq reads it as UTC or as local time
    st.datetimes(min_value=datetime(2100, 1, 1), max_value=datetime(9999, 12, 30)).map(
        datetime.isoformat),
)


@st.composite
def invalid_payload(draw) -> dict:
    """One message for a job actor that must be refused: {actor, args, kwargs, options}."""
    kind = draw(st.sampled_from(["scheduled_for", "unknown keyword", "positional",
                                 "scheduled_at"]))
    args, kwargs, options = [], {}, {}
    if kind == "scheduled_for":
        kwargs = {"scheduled_for": draw(BAD_SCHEDULED_FOR)}
    elif kind == "unknown keyword":
        kwargs = draw(st.dictionaries(UNKNOWN_KEY, JSON, min_size=1, max_size=3))
        scheduled_for = draw(_optional(aware_now_ish()))
        if scheduled_for is not None:
            kwargs["scheduled_for"] = scheduled_for
    elif kind == "positional":
        args = draw(st.lists(JSON, min_size=1, max_size=3))
        kwargs = draw(st.sampled_from([{}, {"scheduled_for": None}])
                      | aware_now_ish().map(lambda text: {"scheduled_for": text}))
    else:
        options = {"scheduled_at": draw(BAD_SCHEDULED_AT)}
    return {"kind": kind, "actor": draw(st.sampled_from(JOB_NAMES)), "args": args,
            "kwargs": kwargs, "options": options}


def send(payload: dict) -> dramatiq.Message:
    return workers.broker.get_actor(payload["actor"]).send_with_options(
        args=payload["args"], kwargs=payload["kwargs"], **payload["options"])


@settings(max_examples=3, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(invalid_payload(), min_size=20, max_size=40))
def test_invalid_messages_are_dead_lettered_once_and_write_nothing(conn, batch):
    # A worker per batch, started after hypothesis drew it: its consumer threads call
    # `random` (Redis maintenance), which hypothesis takes for a strategy using `random`.
    forget_dead_letters()
    with running_worker() as worker:
        sent = {send(payload).options["redis_message_id"]: payload for payload in batch}
        drain(*QUEUES)
        worker.wait_for(set(sent))

    for redis_id, payload in sent.items():
        event(payload["kind"])
        outcomes = worker.finished.get(redis_id)
        assert outcomes is not None, f"never finished: {payload!r}"
        [outcome] = outcomes
        assert outcome["how"] == "nack", (payload, outcome)
        assert outcome["retries"] is None, (payload, outcome)
        assert isinstance(outcome["exception"], InvalidMessage), (payload, outcome)
        assert str(outcome["exception"]).strip(), payload  # says what is wrong
        assert redis_id in dead_letters(JOBS[payload["actor"]].queue), payload
    assert worker.retries == []
    for queue in QUEUES:  # dead-lettered once: no second copy of anything
        expected = sum(1 for p in sent.values() if JOBS[p["actor"]].queue == queue)
        assert len(dead_letters(queue)) == expected, queue
    assert count_rows(conn, "job_runs") == 0


# --------------------------------------------------------------------------------------
# 3. a message for an actor that does not exist


def test_a_message_for_an_unknown_actor_is_dead_lettered_once_and_the_worker_goes_on(
        conn, worker, caplog):
    message = dramatiq.Message(queue_name="default", actor_name="no_such_job", args=(),
                               kwargs={"scheduled_for": datetime.now(UTC).isoformat()},
                               options={})
    redis_id = workers.broker.enqueue(message).options["redis_message_id"]
    drain("default")
    worker.wait_for({redis_id})

    [outcome] = worker.finished[redis_id]
    assert outcome["how"] == "nack" and outcome["retries"] is None
    assert isinstance(outcome["exception"], ActorNotFound)
    assert dead_letters("default") == {redis_id}
    assert worker.retries == []
    assert any(record.levelname == "ERROR"
               and "undefined actor 'no_such_job'" in record.getMessage()
               and "DLQ" in record.getMessage() for record in caplog.records)
    assert count_rows(conn, "job_runs") == 0

    # the worker is still consuming that queue
    valid = workers.broker.get_actor("presence_cleanup").send_with_options(
        kwargs={"scheduled_for": datetime.now(UTC).isoformat()})
    drain("default")
    worker.wait_for({valid.options["redis_message_id"]})
    rows = conn.execute("SELECT job, status FROM job_runs").fetchall()
    assert rows == [{"job": "presence_cleanup", "status": "succeeded"}]


# --------------------------------------------------------------------------------------
# What the fuzzing found, fixed, and kept as regression tests.
#
# Not covered: a hand-made message whose `kwargs` is not a JSON object fails in Dramatiq's
# WorkerThread with TypeError before the actor sees it (not retried: see should_retry),
# but under pytest the worker's log line about it (str() of such a message raises) kills
# the worker thread, because pytest's log capture re-raises formatting errors.


@pytest.mark.parametrize("limit", [str(2**63), "99999999999999999999", str(10**30), "10001"])
def test_a_limit_beyond_the_maximum_is_a_usage_error(conn, capsys, limit):
    code, _, err = call_cli(["history", "--limit", limit], capsys)
    assert code == 2 and err.startswith("saathii-workers: ")


@pytest.mark.parametrize("kwargs, options", [
    pytest.param({"scheduled_for": 0}, {}, id="int 0"),
    pytest.param({"scheduled_for": 1_700_000_000}, {}, id="int seconds"),
    pytest.param({"scheduled_for": 1.5}, {}, id="float"),
    pytest.param({"scheduled_for": "1700000000"}, {}, id="numeric string"),
    pytest.param({"scheduled_for": "9999-12-31T23:59:59-14:00"}, {}, id="past 9999 in UTC"),
    pytest.param({"scheduled_for": "0001-01-01T00:00:00+05:30"}, {}, id="before 0001 in UTC"),
    pytest.param({}, {"scheduled_at": "9999-12-31T23:59:59-14:00"}, id="scheduled_at past 9999"),
    pytest.param({"scheduled_for": "2026-11-22T10:00:00 Z"}, {}, id="space before the offset"),
])
def test_found_invalid_messages_are_dead_lettered_at_once_and_write_nothing(conn, worker,
                                                                            kwargs, options):
    # presence_cleanup has no retries, so a message Dramatiq would retry fails here at once
    redis_id = workers.broker.get_actor("presence_cleanup").send_with_options(
        kwargs=kwargs, **options).options["redis_message_id"]
    drain("default")
    worker.wait_for({redis_id})

    assert count_rows(conn, "job_runs") == 0
    [outcome] = worker.finished[redis_id]
    assert (outcome["how"], outcome["retries"]) == ("nack", None), outcome
    assert isinstance(outcome["exception"], InvalidMessage), outcome
    assert redis_id in dead_letters("default")


def test_a_message_dramatiq_cannot_hand_to_the_actor_is_not_retried(conn, worker):
    # badge_assignment retries failed runs; a keyword named `self` fails in Dramatiq's own
    # call of the actor (TypeError), before any run: retrying it could never help.
    redis_id = workers.broker.get_actor("badge_assignment").send_with_options(
        kwargs={"self": 1}).options["redis_message_id"]
    drain("default")  # waits out the delay queue too: a retry would show here
    worker.wait_for({redis_id})

    assert count_rows(conn, "job_runs") == 0
    [outcome] = worker.finished[redis_id]
    assert outcome["how"] == "nack" and isinstance(outcome["exception"], TypeError), outcome
    assert redis_id in dead_letters("default")
