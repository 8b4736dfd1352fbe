"""python -m bench.lag [--calls 10000] [--minutes 10] [--out bench/results/lag.json] [--keep]
                       [--processes 2] [--threads 4] [--worker-timeout MS]

How late each minute's billing lands on the wall clock, with the real scheduler and workers.

What is measured. For each of --minutes consecutive wall-clock minute boundaries B, the lag
is the time from B to the commit of coin_deduction's run for slot B, read as that run's
job_runs.finished_at: the row turns 'succeeded' in the transaction that bills (db/runs.sql,
`finish`), and finished_at is clock_timestamp() in that UPDATE, the transaction's last
statement; COMMIT follows in the next round trip. (With track_commit_timestamp on, the
commit record was 0.1-0.3 ms after finished_at, and pg_test_fsync flushes the bench's disk
in 0.1 ms: not worth a server setting.) The lag in consecutive parts, in seconds:
  sent    B -> periodiq logs "Scheduling Actor(coin_deduction) at B", the millisecond it
          makes the message (its message_timestamp): the scheduler's wake-up
  wait    -> a worker thread logs "Processing <message id>" (periodiq's middleware, just
          before the actor): the message waiting in Redis for an idle consumer's next poll
  claim   -> job_runs.started_at: a pooled connection, marking abandoned runs, the claim
  run     -> job_runs.finished_at: the billing transaction
Percentiles are nearest-rank over the minutes whose run succeeded (of 10, p99 is the max).
A minute without a succeeded run (skipped while another tick held the lock, dropped as
stale, lost) shows its status and has no lag.

How. bench.world's servers (a fresh embedded PostgreSQL, tuned, and Redis) in a temporary
directory; a database with the schema and bench/population.sql's N ongoing calls at the
current minute, callers holding 1,000,000 coins. A thread does the API's part: every
SEEN_INTERVAL one statement marks every party seen now and busy for another hour, so no
call ends for a silent party or an expired busy state. badge_assignment is paused: on a
fresh database the catch-up would assign a week of missed days in the first minutes, work
a steady system does once a day. Then `dramatiq workers` and `periodiq workers`, each
leading a session of its own, logging to a file in the temporary directory, with the
settings' defaults. periodiq sends a tick as it starts: that warm-up tick is waited for and
not measured; the next --minutes boundaries are. The other jobs run as scheduled (catch_up
each minute, presence_cleanup every 5, call_cleanup every 10): the table says what else ran
for each minute's slot. call_cleanup runs the same tick under its own lock; when it locks
the calls first it bills the minute, and coin_deduction, waiting for those row locks, then
finds nothing owed: its commit still bounds when the minute was billed.

--worker-timeout sets Dramatiq's `dramatiq_worker_timeout` (ms, default 1000; there is no
command-line option): an idle Redis consumer polls again after a backoff that grows to
between half of it and all of it, which bounds the `wait` part.

Exit 0: measured (table printed, JSON written). 2: the harness failed or was interrupted,
or a tick did not bill every call (the table and JSON still say what happened); one line
on stderr says why.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

# `workers` (which bench.world imports) reads its settings once, at its first import: the
# harness's own process must not report to a developer's Sentry nor write to their LOG_DIR.
for _variable in ("SENTRY_DSN", "LOG_DIR"):
    os.environ.pop(_variable, None)

from bench import runner  # noqa: E402
from bench.world import TIMEZONE, Servers, connect, populate  # noqa: E402
from chaos.processes import BIN, Child  # noqa: E402
from workers.engine.db import queries  # noqa: E402
from workers.settings import Settings  # noqa: E402

EXIT_OK, EXIT_HARNESS = 0, 2
JOB = "coin_deduction"
DATABASE = "lag"
#: As docker/Dockerfile and `make run` run the workers. Dramatiq's defaults here would be
#: 2 processes (one per core) x 8 threads: the same processes, each polling the billing
#: queue, which is what the lag depends on; one tick a minute never needs 8 threads.
PROCESSES, THREADS = 2, 4
#: Jobs paused for the run (see the module docstring).
PAUSED = ("badge_assignment",)
#: How often every party is marked seen (seconds): well inside HEARTBEAT_TIMEOUT_SECONDS.
SEEN_INTERVAL = 20
#: Longest wait for the workers to boot, and then for periodiq's warm-up tick (seconds).
BOOT_TIMEOUT = 120
#: Longest wait after the last measured boundary for its run to end (seconds): more than
#: the job's time limit (55 s).
SETTLE_TIMEOUT = 90
POLL = 1.0  # seconds between looks at the children and the database
WORKER_READY = "Worker process is ready for action."
PARTS = ("sent", "wait", "claim", "run")

SEEN = "UPDATE user_status SET last_seen = now(), busy_until = now() + interval '1 hour'"
ENDED = """SELECT scheduled_for, status, finished_at FROM job_runs
WHERE job = %(job)s AND status <> 'running'
  AND (%(slots)s::timestamptz[] IS NULL OR scheduled_for = ANY(%(slots)s::timestamptz[]))
ORDER BY scheduled_for"""
RUNS = """SELECT job, scheduled_for, status, message_id, started_at, finished_at, result,
       coalesce(skip_reason, error) AS reason
FROM job_runs WHERE scheduled_for = ANY(%(slots)s) ORDER BY scheduled_for, job"""
LEDGER = """SELECT count(*) FILTER (WHERE status = 'ongoing') AS ongoing_calls,
       sum(floor(extract(epoch FROM %(last)s - start_time) / 60) + 1)::bigint AS owed_minutes,
       (SELECT count(*) FROM user_transactions WHERE tx_type = 'spend') AS spend_rows
FROM user_calls"""

_AT = r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] "
SENT = re.compile(_AT + rf".* Scheduling Actor\({JOB}\) at (?P<slot>.+)\.$", re.MULTILINE)
PICKED = re.compile(_AT + rf".* Processing (?P<message_id>[\w-]+):{JOB}\(.*\) scheduled at ",
                    re.MULTILINE)


class HarnessError(Exception):
    """The bench could not do its part: exit 2 with this one line."""


@dataclass
class Minute:
    """One measured boundary: what became of its tick, and where the time went."""

    boundary: datetime
    status: str  # the tick's job_runs status, or 'missing'
    lag: float | None = None  # seconds, boundary -> finished_at of a succeeded tick
    parts: dict[str, float | None] = field(default_factory=dict)
    minutes_charged: int | None = None
    calls_ended: dict = field(default_factory=dict)
    reason: str | None = None
    #: The other jobs run for the same slot: run time (seconds) and, for call_cleanup,
    #: which bills too, the minutes it charged first.
    beside: dict[str, dict] = field(default_factory=dict)

    def billed(self) -> int:
        """Minutes charged for this slot, by the tick or by call_cleanup racing it."""
        return sum(run.get("minutes_charged") or 0
                   for run in ({"minutes_charged": self.minutes_charged},
                               *self.beside.values()))


# The numbers --------------------------------------------------------------------------

def minute_of(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(second=0, microsecond=0)


def clock(instant: datetime) -> str:
    """HH:MM on the business's clock (APP_TIMEZONE), as minutes are shown."""
    return f"{instant.astimezone(ZoneInfo(TIMEZONE)):%H:%M}"


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def log_time(text: str) -> datetime:
    """A log line's asctime, in this machine's local time (the children share our TZ)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").astimezone()


def sent_times(scheduler_log: str) -> dict[datetime, datetime]:
    """When periodiq sent the tick of each slot, by slot."""
    return {minute_of(datetime.fromisoformat(m["slot"])): log_time(m["at"])
            for m in SENT.finditer(scheduler_log)}


def picked_times(worker_log: str) -> dict[str, datetime]:
    """When a worker thread took each tick's message, by message id."""
    return {m["message_id"]: log_time(m["at"]) for m in PICKED.finditer(worker_log)}


def minute_from(boundary: datetime, runs: list[dict], sent: dict, picked: dict) -> Minute:
    """The minute at `boundary`, from its slot's job_runs rows and the logs' times."""
    beside = {run["job"]: {"run": seconds(run["started_at"], run["finished_at"]),
                           "minutes_charged": (run["result"] or {}).get("minutes_charged")}
              for run in runs if run["job"] != JOB}
    tick = next((run for run in runs if run["job"] == JOB), None)
    if tick is None:
        return Minute(boundary, "missing", beside=beside)
    points = [boundary, sent.get(boundary), picked.get(tick["message_id"]),
              tick["started_at"], tick["finished_at"]]
    result = tick["result"] or {}
    return Minute(boundary, tick["status"],
                  lag=seconds(boundary, tick["finished_at"])
                  if tick["status"] == "succeeded" else None,
                  parts={part: seconds(start, end)
                         for part, start, end in zip(PARTS, points[:-1], points[1:], strict=True)},
                  minutes_charged=result.get("minutes_charged"),
                  calls_ended=result.get("calls_ended", {}), reason=tick["reason"],
                  beside=beside)


def percentile(values: list[float], p: int) -> float:
    """Nearest rank: the smallest of `values` with at least p% of them at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def summarize(minutes: list[Minute]) -> dict[str, dict[str, float]]:
    """p50, p99 and max of the lag and of each of its parts, over the succeeded minutes."""
    done = [m for m in minutes if m.status == "succeeded"]
    series = {"lag": [m.lag for m in done], **{p: [m.parts.get(p) for m in done] for p in PARTS}}
    known = {name: [v for v in values if v is not None] for name, values in series.items()}
    return {name: {"p50": percentile(values, 50), "p99": percentile(values, 99),
                   "max": max(values)} for name, values in known.items() if values}


def table(minutes: list[Minute], summary: dict) -> str:
    """One row a minute, then p50, p99 and max: the report as printed."""
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    columns = ("lag", *PARTS)
    lines = [f"{'minute':<7}{'status':<10}" + "".join(f"{c:>8}" for c in columns)
             + f"{'billed':>8}  beside"]
    for m in minutes:
        beside = ", ".join(f"{job} {cell(run['run'])}s" + (
            f" billed {run['minutes_charged']}" if run["minutes_charged"] else "")
            for job, run in m.beside.items() if job != "catch_up")  # every minute, in ms
        billed = "-" if m.minutes_charged is None else m.minutes_charged
        lines.append(f"{clock(m.boundary):<7}{m.status:<10}"
                     + "".join(f"{cell(v):>8}"
                               for v in (m.lag, *(m.parts.get(p) for p in PARTS)))
                     + f"{billed:>8}  {beside or m.reason or ''}".rstrip())
    for stat in ("p50", "p99", "max"):
        lines.append(f"{stat:<17}" + "".join(f"{cell(summary.get(c, {}).get(stat)):>8}"
                                             for c in columns))
    return "\n".join(lines)


def billing_problems(minutes: list[Minute], calls: int, ledger: dict) -> list[str]:
    """Why the run measured less than real billing, if it did: each succeeded tick's slot
    charges every call at least a minute (call_cleanup, every 10 minutes, may charge it
    first: the tick then finds nothing owed, and commits after it) and the tick ends no
    call; every call is on at the end; every minute owed by the last tick is charged."""
    problems = [f"{clock(m.boundary)} billed {m.billed()} minutes, ended {m.calls_ended}"
                for m in minutes if m.status == "succeeded"
                and (m.billed() < calls or any(m.calls_ended.values()))]
    if ledger["ongoing_calls"] != calls:
        problems.append(f"{ledger['ongoing_calls']} of {calls} calls ongoing at the end")
    if ledger["spend_rows"] != ledger["owed_minutes"]:
        problems.append(f"{ledger['spend_rows']} spend rows for {ledger['owed_minutes']} "
                        f"owed minutes")
    return problems


# The run ------------------------------------------------------------------------------

class Heartbeats(threading.Thread):
    """The API's part: every SEEN_INTERVAL, every party seen now and busy an hour more."""

    def __init__(self, url: str):
        super().__init__(name="heartbeats", daemon=True)
        self.url = url
        self.stopped = threading.Event()
        self.error: psycopg.Error | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while True:
                    conn.execute(SEEN)
                    if self.stopped.wait(SEEN_INTERVAL):
                        return
        except psycopg.Error as error:
            self.error = error

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=SEEN_INTERVAL)


def child_environment(database_url: str, redis_url: str, worker_timeout: int | None) -> dict:
    """Ours without any of the workers' settings (their defaults hold, as deployed) but the
    servers, the bench's timezone and INFO logging, whose lines are measured."""
    settings = set(Settings.model_fields) | {"dramatiq_worker_timeout"}
    env = {key: value for key, value in os.environ.items() if key.lower() not in settings}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "APP_TIMEZONE": TIMEZONE, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    if worker_timeout is not None:
        env["dramatiq_worker_timeout"] = str(worker_timeout)
    return env


class Bench:
    """One run: servers, heartbeats and children, all undone by stop()."""

    def __init__(self, args: argparse.Namespace, directory: Path):
        self.args, self.directory = args, directory
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.began = time.monotonic()
        self.servers: Servers | None = None
        self.heartbeats: Heartbeats | None = None
        self.children: list[Child] = []

    def progress(self, message: str) -> None:
        print(f"bench.lag +{time.monotonic() - self.began:4.0f}s {message}", file=sys.stderr,
              flush=True)

    def measure(self) -> dict:
        args = self.args
        self.servers = Servers.start(self.directory, with_redis=True)
        url = self.servers.fresh_database(DATABASE)
        with connect(url) as conn:
            now = minute_of(datetime.now(UTC))
            took = populate(conn, calls=args.calls, now=now)
            self.progress(f"{args.calls} ongoing calls at {clock(now)} in {took:.1f} s")
            for job in PAUSED:
                conn.execute(queries("runs.sql")["set_paused"], {"job": job, "paused": True})
            self.heartbeats = Heartbeats(url)
            self.heartbeats.start()
            env = child_environment(url, self.servers.redis.url, args.worker_timeout)
            worker = self.start("dramatiq", ["--processes", str(args.processes),
                                             "--threads", str(args.threads)], env)
            self.wait_for_boot(worker)
            scheduler = self.start("periodiq", [], env)
            warmed = self.wait_for_warm_up(conn)
            slots = [minute_of(warmed) + timedelta(minutes=i + 1) for i in range(args.minutes)]
            self.progress(f"warm-up tick done; measuring {clock(slots[0])} to "
                          f"{clock(slots[-1])} ({TIMEZONE})")
            self.wait_through(conn, slots)
            for child in (scheduler, worker):
                child.terminate()
            rows = conn.execute(RUNS, {"slots": slots}).fetchall()
            last = max((r["scheduled_for"] for r in rows
                        if r["job"] == JOB and r["status"] == "succeeded"), default=now)
            ledger = conn.execute(LEDGER, {"last": last}).fetchone()
        sent, picked = sent_times(scheduler.output()), picked_times(worker.output())
        minutes = [minute_from(slot, [r for r in rows if r["scheduled_for"] == slot], sent,
                               picked) for slot in slots]
        return {"minutes": minutes, "summary": summarize(minutes), "ledger": ledger}

    def start(self, program: str, args: list[str], env: dict) -> Child:
        child = Child(program, [str(BIN / program), "workers", *args], env, self.logs)
        self.children.append(child)
        child.start()
        return child

    def check(self) -> None:
        """Raise if a child exited or the heartbeats failed."""
        for child in self.children:
            if not child.alive():
                raise HarnessError(f"{child.name} exited with {child.process.returncode}; "
                                   f"its log: {child.log} (--keep keeps it)")
        if self.heartbeats is not None and self.heartbeats.error is not None:
            raise HarnessError(f"heartbeats failed: {self.heartbeats.error}")

    def wait_for_boot(self, worker: Child) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while worker.output().count(WORKER_READY) < self.args.processes:
            self.check()
            if time.monotonic() > deadline:
                raise HarnessError(f"the workers did not boot in {BOOT_TIMEOUT} s")
            time.sleep(POLL)

    def wait_for_warm_up(self, conn: psycopg.Connection) -> datetime:
        """When the first tick (periodiq sends one as it starts) ended."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not (ended := conn.execute(ENDED, {"job": JOB, "slots": None}).fetchone()):
            self.check()
            if time.monotonic() > deadline:
                raise HarnessError(f"no {JOB} run ended within {BOOT_TIMEOUT} s of the start")
            time.sleep(POLL)
        return ended["finished_at"]

    def wait_through(self, conn: psycopg.Connection, slots: list[datetime]) -> None:
        """Until the last slot's tick ended (or SETTLE_TIMEOUT after it), telling each as it
        ends: the wall clock is what is measured."""
        deadline = slots[-1] + timedelta(seconds=SETTLE_TIMEOUT)
        told: set[datetime] = set()
        while len(told) < len(slots) and datetime.now(UTC) < deadline:
            self.check()
            for row in conn.execute(ENDED, {"job": JOB, "slots": slots}):
                if row["scheduled_for"] not in told:
                    told.add(row["scheduled_for"])
                    self.progress(f"{clock(row['scheduled_for'])} {row['status']} "
                                  f"{seconds(row['scheduled_for'], row['finished_at'])} s "
                                  f"after the minute")
            time.sleep(POLL)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.terminate()
        if self.heartbeats is not None:
            self.heartbeats.stop()
        if self.servers is not None:
            try:
                self.servers.stop()
            except RuntimeError as error:
                self.progress(f"stopping the servers: {error}")


# The command --------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lag",
        description="How late each wall-clock minute's billing commits, with the real "
                    "periodiq scheduler and dramatiq workers.")
    parser.add_argument("--calls", type=int, default=10_000, help="ongoing calls (10000)")
    parser.add_argument("--minutes", type=int, default=10, help="minutes measured (10)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/lag.json"))
    parser.add_argument("--processes", type=int, default=PROCESSES)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--worker-timeout", type=int, metavar="MS",
                        help="the workers' dramatiq_worker_timeout (Dramatiq's default 1000)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (servers' data, the logs)")
    return parser


def report(args: argparse.Namespace, measured: dict) -> dict:
    """The JSON written to --out."""
    minutes = measured["minutes"]
    return {
        "lag": "minute boundary -> job_runs.finished_at of that slot's succeeded "
               "coin_deduction run: the last statement of the billing transaction, whose "
               "COMMIT follows within a millisecond",
        "parts": "sent: boundary -> periodiq sends the message; wait: -> a worker thread "
                 "takes it; claim: -> job_runs.started_at; run: -> job_runs.finished_at",
        "percentiles": "nearest rank, over the succeeded minutes",
        "config": {"calls": args.calls, "minutes": args.minutes, "processes": args.processes,
                   "threads": args.threads,
                   "dramatiq_worker_timeout_ms": args.worker_timeout or "default (1000)"},
        "summary": measured["summary"],
        "succeeded": sum(m.status == "succeeded" for m in minutes),
        "minutes_charged": sum(m.billed() for m in minutes),
        "ledger": measured["ledger"],
        "minutes": [asdict(m) for m in minutes],
    }


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if (min(args.calls, args.minutes, args.processes, args.threads) < 1
            or (args.worker_timeout is not None and args.worker_timeout < 1)):
        print("bench.lag: --calls, --minutes, --processes, --threads and --worker-timeout "
              "must be positive", file=sys.stderr)
        return EXIT_HARNESS
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after the run
    except OSError as error:
        print(f"bench.lag: cannot write {args.out}: {error.strerror}", file=sys.stderr)
        return EXIT_HARNESS
    directory = Path(tempfile.mkdtemp(prefix="saathii-lag-"))
    bench = Bench(args, directory)
    measured, error = runner.measure(bench, directory, keep=args.keep,
                                     harness_errors=(HarnessError,))
    if measured is not None:
        written = report(args, measured)
        args.out.write_text(json.dumps(written, indent=2, default=str) + "\n")
        print(table(measured["minutes"], measured["summary"]))
        print(f"billed: {written['minutes_charged']} minutes of {args.calls} calls in "
              f"{args.minutes} minutes, {written['succeeded']} ticks succeeded; ledger: "
              f"{measured['ledger']}; JSON in {args.out}")
        error = "; ".join(billing_problems(measured["minutes"], args.calls,
                                           measured["ledger"])) or None
    if error is not None:
        print(f"bench.lag: {error}", file=sys.stderr)
        return EXIT_HARNESS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
