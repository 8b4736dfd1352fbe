"""python -m bench.scrape [--runs 1000000] [--calls 10000] [--scrapes 50]
                          [--out bench/results/scrape.json] [--keep]

How long a Prometheus scrape and the health checks take on a database with a long run
history.

What is measured. A fresh embedded PostgreSQL (bench.world's, tuned) and Redis; a database
with the schema, --runs rows of job_runs spread evenly over the job table's jobs, one a
minute going back from now (1% failed, the rest succeeded, each with a billing-sized
result), the counters job_run_totals holds for them (as the trigger would have kept them),
--calls ongoing calls, a live worker and scheduler in job_processes. Then:
  scrape  `python -m workers metrics` serving, and --scrapes GETs of /metrics from this
          process after three warm-up ones: the wall time of each request (connection,
          PostgreSQL and Redis reads, exposition); and the server's own figure
          (saathii_scrape_duration_seconds, the reads alone)
  health  health.check_all in this process, --scrapes times: every check of
          `python -m workers health`, without the interpreter's start
Percentiles are nearest-rank.

Exit 0: measured (table printed, JSON written). 2: the harness failed or was interrupted.
"""

import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

# As bench.lag: the harness's own process must not report to a developer's Sentry.
for _variable in ("SENTRY_DSN", "LOG_DIR"):
    os.environ.pop(_variable, None)

from bench import runner  # noqa: E402
from bench.world import Servers, connect, populate  # noqa: E402
from chaos.processes import Child  # noqa: E402
from workers.observability import health  # noqa: E402
from workers.schedule import JOBS  # noqa: E402
from workers.settings import Settings  # noqa: E402

EXIT_OK, EXIT_HARNESS = 0, 2
DATABASE = "scrape"
WARM_UP = 3
BOOT_TIMEOUT = 60

RUNS = """
INSERT INTO job_runs (job, scheduled_for, status, attempt, started_at, finished_at, duration,
                      host, pid, result, error)
SELECT j.job, s.slot, s.status, 1, s.slot + interval '1 second',
       s.slot + interval '1 second' + s.took, s.took, 'bench', 1,
       CASE WHEN s.status = 'succeeded' THEN jsonb_build_object(
           'calls_seen', 10000, 'minutes_charged', 10000, 'coins_charged', 100000,
           'calls_ended', jsonb_build_object('heartbeat_timeout', 3), 'calls_settled', 3,
           'money_earned', '30.00') END,
       CASE WHEN s.status = 'failed' THEN 'RuntimeError: bench' END
FROM unnest(%(jobs)s::text[]) WITH ORDINALITY AS j(job, n)
CROSS JOIN LATERAL (
    SELECT date_trunc('minute', %(now)s::timestamptz) - k * interval '1 minute' AS slot,
           CASE WHEN k %% 100 = 37 THEN 'failed' ELSE 'succeeded' END AS status,
           (0.05 + (k %% 50) / 10.0) * interval '1 second' AS took
    FROM generate_series(1, %(per_job)s) AS k
) s
"""
# What count_finished_run() would have kept for those rows, in one statement.
TOTALS = """
INSERT INTO job_run_totals (job, status, le, runs, seconds)
SELECT job, status, le, count(*), sum(seconds)
FROM (SELECT r.job, r.status, extract(epoch FROM r.duration) AS seconds,
             coalesce((SELECT min(b) FROM unnest(run_duration_buckets()) b
                       WHERE b >= extract(epoch FROM r.duration)), 'Infinity') AS le
      FROM job_runs r) t
GROUP BY job, status, le
"""
FIGURES = """
INSERT INTO job_run_figures (job, figure, total)
SELECT r.job, f.figure, sum(f.value)
FROM job_runs r CROSS JOIN LATERAL result_figures(r.result) f
WHERE r.status = 'succeeded'
GROUP BY r.job, f.figure
"""
PROCESSES = """
INSERT INTO job_processes (process_id, kind, host, pid, version, started_at, beat_at, queues,
                           threads)
VALUES (gen_random_uuid(), 'worker', 'bench', 1, 'bench', now(), now() + interval '1 day',
        %(queues)s, 4),
       (gen_random_uuid(), 'scheduler', 'bench', 2, 'bench', now(), now() + interval '1 day',
        '{}', 0)
"""


class HarnessError(Exception):
    pass


def nearest_rank(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percentile / 100 * len(ordered)) - 1)]


def summary(seconds: list[float]) -> dict:
    return {"n": len(seconds), **{f"p{p}_ms": round(nearest_rank(seconds, p) * 1000, 1)
                                  for p in (50, 95, 99)},
            "max_ms": round(max(seconds) * 1000, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def own_figure(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("saathii_scrape_duration_seconds "):
            return float(line.split()[1])
    raise HarnessError("the scrape has no saathii_scrape_duration_seconds")


def fill_history(conn, runs: int, now: datetime) -> int:
    """The run history of these benches (the module's docstring): `runs` rows of job_runs
    over the table's jobs, their counters, a live worker and scheduler; how many rows."""
    jobs = list(JOBS)
    conn.execute(RUNS, {"jobs": jobs, "now": now, "per_job": runs // len(jobs)})
    conn.execute(TOTALS)
    conn.execute(FIGURES)
    conn.execute(PROCESSES, {"queues": sorted({job.queue for job in JOBS.values()})})
    conn.execute("VACUUM ANALYZE")
    return conn.execute("SELECT count(*) AS n FROM job_runs").fetchone()["n"]


class ServerBench:
    """A bench of one server process of ours (`python -m workers ...`) on fresh servers:
    started by start_server, stopped with them by stop()."""

    name = "bench"

    def __init__(self, args: argparse.Namespace, directory: Path):
        self.args, self.directory = args, directory
        self.began = time.monotonic()
        self.servers: Servers | None = None
        self.server: Child | None = None

    def progress(self, message: str) -> None:
        print(f"{self.name} +{time.monotonic() - self.began:4.0f}s {message}",
              file=sys.stderr, flush=True)

    def start_server(self, command: str, env: dict[str, str], ready) -> None:
        """Start `python -m workers COMMAND` and wait until `ready()` stops raising OSError."""
        self.server = Child(command, [sys.executable, "-m", "workers", command],
                            {**os.environ, "LOG_LEVEL": "WARNING", **env}, self.directory)
        self.server.start()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                return ready()
            except OSError:
                if not self.server.alive() or time.monotonic() > deadline:
                    raise HarnessError(f"`workers {command}` did not answer:\n"
                                       f"{self.server.output()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
        if self.servers is not None:
            try:
                self.servers.stop()
            except Exception as error:  # the measurement stands; say why they did not stop
                self.progress(f"stopping the servers: {error}")


class Bench(ServerBench):
    name = "bench.scrape"

    def measure(self) -> dict:
        args = self.args
        self.servers = Servers.start(self.directory, with_redis=True)
        url = self.servers.fresh_database(DATABASE)
        now = datetime.now(UTC)
        with connect(url) as conn:
            populate(conn, calls=args.calls, now=now)
            began = time.perf_counter()
            rows = fill_history(conn, args.runs, now)
        self.progress(f"{rows} job_runs rows, {args.calls} ongoing calls in"
                      f" {time.perf_counter() - began:.1f} s")

        port = free_port()
        endpoint = f"http://127.0.0.1:{port}/metrics"
        self.start_server("metrics", {"DATABASE_URL": url, "REDIS_URL": self.servers.redis.url,
                                      "METRICS_PORT": str(port)}, lambda: get(endpoint))
        for _ in range(WARM_UP):
            get(endpoint)
        walls, owns = [], []
        for _ in range(args.scrapes):
            began = time.perf_counter()
            text = get(endpoint)
            walls.append(time.perf_counter() - began)
            owns.append(own_figure(text))
        self.progress(f"{args.scrapes} scrapes of {len(text.splitlines())} lines")

        settings = Settings(_env_file=None, database_url=url, redis_url=self.servers.redis.url)
        checks = []
        for _ in range(WARM_UP + args.scrapes):
            began = time.perf_counter()
            report = health.check_all(settings, JOBS.values())
            checks.append(time.perf_counter() - began)
        self.progress(f"health: {len(report.checks)} checks, verdict {report.verdict}")
        return {"job_runs": rows, "scrape": summary(walls), "scrape_own": summary(owns),
                "health": summary(checks[WARM_UP:])}

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scrape",
        description="How long a /metrics scrape and the health checks take beside a long "
                    "run history.")
    parser.add_argument("--runs", type=int, default=1_000_000, help="job_runs rows (1000000)")
    parser.add_argument("--calls", type=int, default=10_000, help="ongoing calls (10000)")
    parser.add_argument("--scrapes", type=int, default=50, help="measured scrapes (50)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scrape.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if min(args.runs, args.calls, args.scrapes) < 1:
        print("bench.scrape: --runs, --calls and --scrapes must be positive", file=sys.stderr)
        return EXIT_HARNESS
    directory = Path(tempfile.mkdtemp(prefix="saathii-scrape-"))
    bench = Bench(args, directory)
    measured, error = runner.measure(bench, directory, keep=args.keep,
                                     harness_errors=(HarnessError,))
    if error is not None:
        print(f"bench.scrape: {error}", file=sys.stderr)
        return EXIT_HARNESS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)},
                                    **measured}, indent=2) + "\n")
    print(f"{'':14}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}   ({measured['job_runs']} job_runs)")
    for name in ("scrape", "scrape_own", "health"):
        row = measured[name]
        print(f"{name:14}{row['p50_ms']:9.1f}{row['p95_ms']:9.1f}{row['max_ms']:9.1f}")
    print(f"JSON in {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
