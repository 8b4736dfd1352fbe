"""python -m bench [--calls 1000,10000,100000,1000000] [--shards 1,2] [--sample 2000]
                   [--out bench/results] [--keep]

How long one coin_deduction tick takes as N, the ongoing calls, grows, against the least
the database could do and against the original per-call loop. `make bench` runs it.

How. One fresh embedded PostgreSQL (bench.world's settings) and Redis for the whole run,
in a temporary directory. The logical time `now` is the minute the run starts.

- Idle: a database with the schema and no calls; IDLE_RUNS ticks at successive minutes in
  one tick process; the median, in ms.
- For each N, a fresh database with N ongoing calls owing minute 2 at `now`, every caller
  rich (bench/population.sql), then, alternating: the floor, the tick at `now`, the floor,
  the tick at now+1 min, the floor, the tick at now+2 min. Each tick charges one minute of
  every call; before each, everyone is seen at its minute (the API's heartbeats, untimed).
  * floor: `UPDATE user_wallets SET balance_coins = balance_coins - 10` for every ongoing
    call's caller, in a transaction rolled back (balances and ledger stay true); the
    UPDATE is timed, the median reported.
  * tick: bench/tick.py, a fresh process per tick that runs the job as a worker does and
    reports its own time (to the commit, then the after-commit Redis publishing) and its
    memory. The first tick is reported as cold, the median of the others as the tick.
  * shards: for each K > 1 in --shards, everyone is seen again and the next minute's tick
    runs as K shard jobs, K processes started together: the wall time until the last
    one's end, and the speed-up over the K=1 tick.
  * per-call loop (bench/baseline.py), last: the original algorithm on a sample of
    --sample calls over the same Unix socket, extrapolated to N.
- For each N, a second fresh database where 10% of the callers have no coins: one tick at
  `now`, whose calls for those callers end (insufficient_coins) and are settled.

Each tick is checked: it succeeded, charged a minute of every call that could pay and
ended exactly the others. A check that fails is printed and makes the exit code 2 (the
table and files are still written).

Output: the table, the verdict on each of the issue's targets, and in --out billing.json
(every number, the machine and the server's settings) and billing.png (seconds against N,
log-log). Exit 0: measured; 2: the harness failed or was interrupted (one line on stderr
says why), or a check failed.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import psycopg
import redis

# `workers` (which bench.world imports) reads its settings once, at its first import: the
# harness's own process must not report to a developer's Sentry nor write to their LOG_DIR.
for _variable in ("SENTRY_DSN", "LOG_DIR"):
    os.environ.pop(_variable, None)

from bench import report, runner  # noqa: E402
from bench.baseline import per_call_loop  # noqa: E402
from bench.tick import TickFailed, run_ticks  # noqa: E402
from bench.world import POSTGRES_SETTINGS, Servers, connect, populate  # noqa: E402

EXIT_OK, EXIT_HARNESS = 0, 2
DEFAULT_CALLS = (1_000, 10_000, 100_000, 1_000_000)
DEFAULT_SHARDS = (1, 2)
DEFAULT_SAMPLE = 2_000
#: Ticks on each population at `now`, +1 min, +2 min: the first is cold.
STEADY_TICKS = 3
IDLE_RUNS = 20
#: The API's call hashes: their TTL (seconds), and how many the bench writes a round trip.
API_HASH_TTL = 7200
HASH_BATCH = 10_000
BROKE = 0.1
FLOOR = ("UPDATE user_wallets SET balance_coins = balance_coins - 10 "
         "WHERE user_id IN (SELECT user_id FROM user_calls WHERE status = 'ongoing')")
#: The API's part before a later minute's tick: every party seen at that minute.
SEEN_AT = "UPDATE user_status SET last_seen = %(at)s"
#: Ongoing calls whose caller cannot pay the next minute.
UNPAYABLE = ("SELECT count(*) AS calls FROM user_calls c JOIN user_wallets w USING (user_id) "
             "WHERE c.status = 'ongoing' AND w.balance_coins < call_rate(c.call_type)")


class HarnessError(Exception):
    """The bench could not do its part: exit 2 with this one line."""


def run_seconds(run: dict) -> float:
    """A tick's time inside its process: to the commit, then the Redis publishing."""
    return run["db_seconds"] + run["publish_seconds"]


def calls_ended_by(run: dict) -> int:
    return sum(run["result"]["calls_ended"].values())


def floor(conn: psycopg.Connection, calls: int) -> float:
    """The floor's time; its writes are rolled back."""
    with conn.transaction(force_rollback=True):
        started = time.perf_counter()
        updated = conn.execute(FLOOR).rowcount
        took = time.perf_counter() - started
    if updated != calls:
        raise HarnessError(f"the floor updated {updated} wallets, not {calls}")
    return took


class Bench:
    """One run: its servers and temporary directory, its logical time, what went wrong."""

    def __init__(self, args: argparse.Namespace, directory: Path):
        self.args, self.directory = args, directory
        self.began = time.monotonic()
        self.now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.servers: Servers | None = None
        self.problems: list[str] = []

    def progress(self, message: str) -> None:
        print(f"bench +{time.monotonic() - self.began:5.0f}s {message}", file=sys.stderr,
              flush=True)

    def minute(self, n: int) -> datetime:
        return self.now + timedelta(minutes=n)

    def measure(self) -> dict:
        """Everything, for each N in turn. A tick that fails at some N (past its time
        limit, say) ends the run there: the smaller N are still reported."""
        self.servers = Servers.start(self.directory, with_redis=True)
        self.progress(f"servers up in {self.directory}")
        measured = {"postgres": self.postgres_version(), "idle": self.idle(), "calls": []}
        for calls in self.args.calls:
            try:
                measured["calls"].append(self.population(calls))
            except (HarnessError, TickFailed) as failure:
                if not measured["calls"]:
                    raise
                self.problems.append(f"N={calls:,}: {failure}; larger N not measured")
                break
        return measured

    def stop(self) -> None:
        if self.servers is not None:
            try:
                self.servers.stop()
            except RuntimeError as error:  # stop whatever else can be stopped
                self.progress(f"stopping the servers: {error}")

    # Ticks --------------------------------------------------------------------------------

    def ticks(self, url: str, slot: datetime, *, shards: int = 1, repeat: int = 1) -> list:
        """Each shard's report; every run must have succeeded."""
        reports = run_ticks(url, self.servers.redis.url, slot, shards=shards, repeat=repeat,
                            directory=self.directory)
        for shard in reports:
            for run in shard["runs"]:
                if run["status"] != "succeeded":
                    raise HarnessError(f"{run['job']} at {run['scheduled_for']}: "
                                       f"{run['status']}: {run.get('error') or run.get('reason')}")
        return reports

    def tick(self, url: str, slot: datetime) -> dict:
        """One K=1 tick: its run and its process's memory."""
        shard = self.ticks(url, slot)[0]
        return {**shard["runs"][0], "rss_before_kib": shard["rss_before_kib"],
                "peak_rss_kib": shard["peak_rss_kib"]}

    def seen_at(self, conn: psycopg.Connection, slot: datetime) -> None:
        """Every party seen at `slot`, as the API's heartbeats would leave them: a minute
        is owed only while the parties were seen within the slack of its start."""
        conn.execute(SEEN_AT, {"at": slot})
        conn.execute("VACUUM user_status")

    def check(self, what: str, runs: list[dict], *, charged: int, ended: int = 0) -> None:
        """That the runs of a tick (its shards) charged and ended what they should."""
        minutes = sum(run["result"]["minutes_charged"] for run in runs)
        calls_ended = sum(calls_ended_by(run) for run in runs)
        if (minutes, calls_ended) != (charged, ended):
            self.problems.append(f"{what}: charged {minutes} minutes and ended {calls_ended} "
                                 f"calls, not {charged} and {ended}")

    # What is measured ---------------------------------------------------------------------

    def idle(self) -> dict:
        url = self.servers.fresh_database("idle")
        runs = self.ticks(url, self.now, repeat=IDLE_RUNS)[0]["runs"]
        self.servers.drop_database("idle")
        ms = [run_seconds(run) * 1000 for run in runs]
        self.progress(f"idle tick: median {median(ms):.1f} ms of {len(ms)}")
        return {"median_ms": median(ms), "ms": ms}

    def population(self, calls: int) -> dict:
        name = f"calls_{calls}"
        url = self.servers.fresh_database(name)
        self.flush_redis()
        with connect(url) as conn:
            populated = populate(conn, calls=calls, now=self.now)
            self.call_hashes(conn)
            self.progress(f"N={calls:,}: populated in {populated:.1f} s")
            floors, ticks = [], []
            for n in range(STEADY_TICKS):
                floors.append(floor(conn, calls))
                self.seen_at(conn, self.minute(n))
                ticks.append(self.tick(url, self.minute(n)))
                self.check(f"N={calls:,} tick {n}", ticks[-1:], charged=calls)
            self.progress(f"N={calls:,}: floor {median(floors):.3f} s, tick "
                          f"{median(map(run_seconds, ticks[1:])):.3f} s")
            extra = [k for k in self.args.shards if k > 1]
            shards = [self.sharded(conn, url, calls, k, self.minute(STEADY_TICKS + i))
                      for i, k in enumerate(extra)]
        sample = min(self.args.sample, calls)
        with self.redis_client() as client:
            loop = per_call_loop(url, client, self.minute(STEADY_TICKS + len(extra)),
                                 sample=sample)
        self.progress(f"N={calls:,}: per-call loop {loop['seconds_per_call'] * 1000:.2f} ms "
                      f"a call over {sample:,}")
        self.servers.drop_database(name)
        return summary(calls, populated, floors, ticks, shards, loop, self.broke(calls))

    def sharded(self, conn: psycopg.Connection, url: str, calls: int, shards: int,
                slot: datetime) -> dict:
        self.seen_at(conn, slot)
        reports = self.ticks(url, slot, shards=shards)
        runs = [report["runs"][0] for report in reports]
        self.check(f"N={calls:,} K={shards}", runs, charged=calls)
        start = min(run["started"] for run in runs)
        wall = max(run["finished"] for run in runs) - start
        self.progress(f"N={calls:,}: K={shards} in {wall:.3f} s (each: "
                      f"{', '.join(f'{run_seconds(run):.3f} s' for run in runs)})")
        return {"shards": shards, "seconds": wall,
                "committed_seconds": max(run["committed"] for run in runs) - start,
                "runs": [{**run, "rss_before_kib": report["rss_before_kib"],
                          "peak_rss_kib": report["peak_rss_kib"]}
                         for run, report in zip(runs, reports, strict=True)]}

    def broke(self, calls: int) -> dict:
        name = f"broke_{calls}"
        url = self.servers.fresh_database(name)
        self.flush_redis()
        with connect(url) as conn:
            populate(conn, calls=calls, now=self.now, broke=BROKE)
            self.call_hashes(conn)
            unpayable = conn.execute(UNPAYABLE).fetchone()["calls"]
        tick = self.tick(url, self.now)
        self.check(f"N={calls:,} {BROKE:.0%} broke", [tick], charged=calls - unpayable,
                   ended=unpayable)
        self.servers.drop_database(name)
        ended = calls_ended_by(tick)
        self.progress(f"N={calls:,}: {BROKE:.0%} broke: {run_seconds(tick):.3f} s, "
                      f"{ended:,} calls ended")
        return {"fraction": BROKE, "seconds": run_seconds(tick), "calls_ended": ended,
                "calls_settled": tick["result"]["calls_settled"], "tick": tick}

    # The servers --------------------------------------------------------------------------

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.servers.redis.url)

    def flush_redis(self) -> None:
        with self.redis_client() as client:
            client.flushall()

    def call_hashes(self, conn: psycopg.Connection) -> None:
        """Each ongoing call's Redis hash as the API makes it (its fields and a 2-hour TTL):
        a tick sets coins_spent only in hashes that are there."""
        with (self.redis_client() as client, conn.transaction(),
              conn.cursor(name="calls") as cursor):
            cursor.execute("SELECT call_id, user_id, listener_id, call_type, start_time,"
                           " coins_spent FROM user_calls WHERE status = 'ongoing'")
            while rows := cursor.fetchmany(HASH_BATCH):
                with client.pipeline(transaction=False) as pipe:
                    for row in rows:
                        key = f"call:{row['call_id']}"
                        pipe.hset(key, mapping={
                            "user_id": row["user_id"], "listener_id": row["listener_id"],
                            "call_type": row["call_type"],
                            "start_time": int(row["start_time"].timestamp()),
                            "coins_spent": row["coins_spent"]})
                        pipe.expire(key, API_HASH_TTL)
                    pipe.execute()

    def postgres_version(self) -> str:
        with connect(self.servers.postgres.socket_url("postgres")) as conn:
            return conn.execute("SHOW server_version").fetchone()["server_version"]


def summary(calls: int, populated: float, floors: list[float], ticks: list[dict],
            shards: list[dict], loop: dict, broke: dict) -> dict:
    """One N's numbers: the raw runs and what the table reports."""
    steady = ticks[1:]
    tick_seconds = median(map(run_seconds, steady))
    floor_seconds = median(floors)
    for sharded in shards:
        sharded["speedup"] = tick_seconds / sharded["seconds"]
    return {
        "calls": calls, "populate_seconds": populated,
        "floor": {"seconds": floor_seconds, "runs": floors},
        "tick": {"cold_seconds": run_seconds(ticks[0]), "seconds": tick_seconds,
                 "db_seconds": median(run["db_seconds"] for run in steady),
                 "publish_seconds": median(run["publish_seconds"] for run in steady),
                 "us_per_call": tick_seconds / calls * 1e6,
                 "rss_delta_mib": max(t["peak_rss_kib"] - t["rss_before_kib"]
                                      for t in ticks) / report.MIB,
                 "peak_rss_mib": max(t["peak_rss_kib"] for t in ticks) / report.MIB,
                 "cold": ticks[0], "steady": steady},
        "tick_over_floor": tick_seconds / floor_seconds,
        "shards": shards,
        "loop": {**loop, "over_tick": loop["extrapolated_seconds"] / tick_seconds},
        "broke": broke,
    }


def results_of(args: argparse.Namespace, bench: Bench, measured: dict) -> dict:
    return {
        "bench": "coin_deduction: one billing tick against N ongoing calls",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version(), "postgres": measured["postgres"],
                    "postgres_settings": POSTGRES_SETTINGS},
        "config": {"calls": args.calls, "shards": args.shards, "sample": args.sample,
                   "now": bench.now.isoformat(), "steady_ticks": STEADY_TICKS - 1,
                   "idle_runs": IDLE_RUNS, "broke": BROKE},
        "definitions": report.DEFINITIONS,
        "idle": measured["idle"],
        "calls": measured["calls"],
        "problems": bench.problems,
    }


# The command --------------------------------------------------------------------------------

def counts(text: str) -> list[int]:
    """A comma-separated list of positive whole numbers, ascending."""
    try:
        values = sorted({int(part.replace("_", "")) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return values


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="One billing tick against N ongoing calls: the tick as the workers run "
                    "it, the bare-UPDATE floor and the original per-call loop.")
    parser.add_argument("--calls", type=counts, default=list(DEFAULT_CALLS),
                        help="ongoing calls, N (1000,10000,100000,1000000)")
    parser.add_argument("--shards", type=counts, default=list(DEFAULT_SHARDS),
                        help="shard counts K; K=1 is the tick itself (1,2)")
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                        help="calls the per-call loop runs on, then extrapolated (2000)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="directory for billing.json and billing.png (bench/results)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (the servers' data and logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.sample < 1:
        print("bench: --sample must be positive", file=sys.stderr)
        return EXIT_HARNESS
    try:
        report.require_plotting()
    except ImportError:
        print("bench: matplotlib is missing: pip install -e '.[bench]' (make bench does)",
              file=sys.stderr)
        return EXIT_HARNESS
    directory = Path(tempfile.mkdtemp(prefix="saathii-bench-"))
    bench = Bench(args, directory)
    measured, error = runner.measure(bench, directory, keep=args.keep,
                                     harness_errors=(HarnessError, TickFailed))
    if measured is not None:
        results = results_of(args, bench, measured)
        results["targets"] = report.verdicts(results)
        args.out.mkdir(parents=True, exist_ok=True)
        written = [report.write_json(args.out, results), report.plot(args.out, results)]
        print(report.table(results))
        print()
        print(report.verdict_lines(results["targets"]))
        print(f"written: {', '.join(map(str, written))}")
        if bench.problems:
            error = "; ".join(bench.problems)
    if error is not None:
        print(f"bench: {error}", file=sys.stderr)
        return EXIT_HARNESS
    return EXIT_OK
