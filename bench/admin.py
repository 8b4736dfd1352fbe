"""python -m bench.admin [--runs 1000000] [--calls 100000] [--requests 100]
                         [--out bench/results/admin.json] [--keep]

How long the admin takes to answer beside a long run history and many live calls.

What is measured. bench.scrape's database (--runs rows of job_runs, their counters) with
--calls ongoing calls (bench.world's population); `python -m workers admin` serving it
(one uvicorn process, as `make run` starts it); then, for each page and endpoint, three
warm-up requests and --requests timed ones from this process with a bearer token: the wall
time of each request on loopback (the server's time plus a loopback round trip).
Percentiles are nearest-rank.

Exit 0: measured (table printed, JSON written). 2: the harness failed or was interrupted.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

for _variable in ("SENTRY_DSN", "LOG_DIR"):
    os.environ.pop(_variable, None)

from bench import runner  # noqa: E402
from bench.scrape import (  # noqa: E402
    WARM_UP,
    HarnessError,
    ServerBench,
    fill_history,
    free_port,
    summary,
)
from bench.world import Servers, connect, populate  # noqa: E402

EXIT_OK, EXIT_HARNESS = 0, 2
DATABASE = "admin"
TOKEN = "bench-admin-token"
#: What is asked for: the overview page, its partial, and the API's lists.
PATHS = ("/", "/partials/overview", "/api/jobs", "/api/runs", "/api/runs?status=failed",
         "/api/runs?job=coin_deduction&limit=100", "/api/statistics", "/api/health")


def get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.read()


class Bench(ServerBench):
    name = "bench.admin"

    def measure(self) -> dict:
        args = self.args
        self.servers = Servers.start(self.directory, with_redis=True)
        url = self.servers.fresh_database(DATABASE)
        now = datetime.now(UTC)
        with connect(url) as conn:
            populate(conn, calls=args.calls, now=now)
            began = time.perf_counter()
            rows = fill_history(conn, args.runs, now)
            calls = conn.execute("SELECT count(*) AS n FROM user_calls"
                                 " WHERE status = 'ongoing'").fetchone()["n"]
        self.progress(f"{rows} job_runs rows, {calls} ongoing calls"
                      f" ({time.perf_counter() - began:.1f} s for the runs)")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        self.start_server("admin", {"DATABASE_URL": url, "REDIS_URL": self.servers.redis.url,
                                    "ADMIN_PORT": str(port), "ADMIN_TOKENS": TOKEN},
                          lambda: get(base + "/api/session"))
        measured = {}
        for path in PATHS:
            for _ in range(WARM_UP):
                get(base + path)
            seconds = []
            for _ in range(args.requests):
                began = time.perf_counter()
                get(base + path)
                seconds.append(time.perf_counter() - began)
            measured[path] = summary(seconds)
            self.progress(f"{path}: p50 {measured[path]['p50_ms']} ms")
        return {"job_runs": rows, "ongoing_calls": calls, "paths": measured}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.admin",
        description="How long the admin's pages and endpoints take beside 1M job_runs and"
                    " 100k ongoing calls.")
    parser.add_argument("--runs", type=int, default=1_000_000, help="job_runs rows (1000000)")
    parser.add_argument("--calls", type=int, default=100_000, help="ongoing calls (100000)")
    parser.add_argument("--requests", type=int, default=100, help="timed requests each (100)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/admin.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if min(args.runs, args.calls, args.requests) < 1:
        print("bench.admin: --runs, --calls and --requests must be positive", file=sys.stderr)
        return EXIT_HARNESS
    directory = Path(tempfile.mkdtemp(prefix="saathii-admin-"))
    bench = Bench(args, directory)
    measured, error = runner.measure(bench, directory, keep=args.keep,
                                     harness_errors=(HarnessError,))
    if error is not None:
        print(f"bench.admin: {error}", file=sys.stderr)
        return EXIT_HARNESS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)},
                                    **measured}, indent=2) + "\n")
    print(f"{'':42}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}   ({measured['job_runs']} job_runs,"
          f" {measured['ongoing_calls']} ongoing calls)")
    for path, row in measured["paths"].items():
        print(f"{path:42}{row['p50_ms']:9.1f}{row['p99_ms']:9.1f}{row['max_ms']:9.1f}")
    print(f"JSON in {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
