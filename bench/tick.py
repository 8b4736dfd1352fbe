"""python -m bench.tick --database-url URL --redis-url URL --slot ISO [--shard I --shards K]
                      [--repeat R]

The coin_deduction tick as the workers run it, in a process of its own: the `workers`
package imported from the environment a worker has (set here, before that import), one
connection as the worker's pool gives it (autocommit, dict rows), and
`workers.engine.runs.run_job` with the real job of `workers.schedule.table(K)` (shard I)
and its real work function, `workers.jobs.coin_deduction.coin_deduction`, under the
RunOptions of a process booted as a worker is (workers.engine.boot: the workers' Redis
client included, so the tick publishes each charged call after commit).

The process connects, prints `ready` and waits for a line on stdin, so that the K shards
of a tick start together; then it runs R ticks at successive minutes from --slot and
prints one JSON line: each run's status and result, its time inside the process up to
the commit (`db_seconds`: the claim, the work, the record) and after it (`publish_seconds`:
the Redis side), instants on the system-wide monotonic clock (CLOCK_MONOTONIC, comparable
between processes), and memory: the RSS right before the first run and the peak RSS
from then to the end of the last, in KiB. The peak is the kernel's high-water mark of the
process's memory (VmHWM), reset to the current RSS right before the run (clear_refs): not
getrusage's ru_maxrss, which also counts the harness's RSS at the fork and the imports'
peak. Exit 2 with one line on stderr if it could not run.

`run_ticks` is the harness's side: it starts the K processes, lets them go at once and
returns what each printed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

#: The business's timezone, as bench/world.py populates with. With the servers and no
#: catch-up on boot, the only setting of the workers the bench pins: every other keeps
#: its default.
TIMEZONE = "Asia/Kolkata"
#: Longest a tick process may take, from its start to its JSON line (seconds): well past
#: the job's own time limit, so a tick that fails reports its failure rather than this.
CHILD_TIMEOUT = 900
READY = "ready"
ROOT = Path(__file__).resolve().parent.parent


class TickFailed(Exception):
    """A tick process could not run or report: the harness stops with this one line."""


# The harness's side ---------------------------------------------------------------------

def run_ticks(database_url: str, redis_url: str, slot: datetime, *, shards: int = 1,
              repeat: int = 1, directory: Path) -> list[dict]:
    """Run the tick at `slot` (and the `repeat - 1` minutes after it) in one process per
    shard, all started at once; what each process reported, by shard."""
    children = [_start(database_url, redis_url, slot, shard, shards, repeat, directory)
                for shard in range(shards)]
    try:
        for child in children:
            _wait_ready(child)
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        return [_report(child) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _start(database_url: str, redis_url: str, slot: datetime, shard: int, shards: int,
           repeat: int, directory: Path) -> subprocess.Popen:
    # The harness has imported `workers` already (bench.world does); the tick process gets
    # none of its settings from our environment, nor from a developer's .env (it runs in
    # an empty directory): only what worker_environment sets.
    from workers.settings import Settings

    env = {name: value for name, value in os.environ.items()
           if name.lower() not in Settings.model_fields}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    argv = [sys.executable, "-m", "bench.tick", "--database-url", database_url,
            "--redis-url", redis_url, "--slot", slot.isoformat(), "--shard", str(shard),
            "--shards", str(shards), "--repeat", str(repeat)]
    return subprocess.Popen(argv, env=env, cwd=directory, text=True, start_new_session=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _wait_ready(child: subprocess.Popen) -> None:
    line = child.stdout.readline().strip()
    if line != READY:
        _, errors = child.communicate(timeout=CHILD_TIMEOUT)
        raise TickFailed(_last_line(errors) or f"tick process exited with {child.returncode}")


def _report(child: subprocess.Popen) -> dict:
    try:
        output, errors = child.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TickFailed(f"a tick process took more than {CHILD_TIMEOUT} s") from None
    if child.returncode != 0:
        raise TickFailed(_last_line(errors) or f"tick process exited with {child.returncode}")
    try:
        return json.loads(_last_line(output))
    except json.JSONDecodeError:
        raise TickFailed(f"a tick process reported no result: {_last_line(output)!r}") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# The tick's process -----------------------------------------------------------------------

def worker_environment(database_url: str, redis_url: str) -> None:
    """What a worker process has, for the `workers` import that follows: these servers,
    the business's timezone, no catch-up on boot, no Sentry and no log files."""
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                       "APP_TIMEZONE": TIMEZONE, "CATCH_UP_ON_BOOT": "false"})
    for variable in ("SENTRY_DSN", "LOG_DIR"):
        os.environ.pop(variable, None)


def measure(args: argparse.Namespace) -> dict:
    # Imported here: `workers` reads the broker's settings when first imported.
    import workers
    from workers.engine.boot import boot
    from workers.engine.db import connect
    from workers.jobs.coin_deduction import coin_deduction
    from workers.schedule import table

    jobs = [job for job in table(args.shards).values() if job.shard_locks is not None]
    job = jobs[args.shard]
    options = boot("worker", broker=workers.broker).run_options()
    with connect(args.database_url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        print(READY, flush=True)
        sys.stdin.readline()
        reset_peak_rss()
        rss_before = memory_kib("VmRSS")
        runs = [timed_run(conn, job, coin_deduction, args.slot + timedelta(minutes=i), options)
                for i in range(args.repeat)]
        peak = memory_kib("VmHWM")
    return {"job": job.name, "shard": args.shard, "shards": args.shards, "runs": runs,
            "rss_before_kib": rss_before, "peak_rss_kib": peak}


def timed_run(conn, job, work, slot: datetime, options) -> dict:
    """One run of `job` through the run contract, timed: its first after-commit step is
    ours, and marks the commit."""
    from workers.engine.runs import run_job

    marks: dict[str, float] = {}

    def work_marking_commit(conn, run):
        run.after_commit(lambda: marks.setdefault("committed", time.monotonic()))
        return work(conn, run)

    started = time.monotonic()
    outcome = run_job(conn, job, slot, options, work=work_marking_commit)
    finished = time.monotonic()
    committed = marks.get("committed", finished)
    return {**outcome.as_json(), "started": started, "committed": committed,
            "finished": finished, "db_seconds": committed - started,
            "publish_seconds": finished - committed}


def reset_peak_rss() -> None:
    """Make the process's peak RSS (VmHWM) its current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.tick",
                                     description="One coin_deduction tick as a worker runs it.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--slot", required=True, type=datetime.fromisoformat,
                        help="the first run's slot, ISO 8601 with an offset")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs, at successive minutes from --slot (1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if not 0 <= args.shard < args.shards or args.repeat < 1:
        print("bench.tick: need 0 <= --shard < --shards and --repeat >= 1", file=sys.stderr)
        return 2
    worker_environment(args.database_url, args.redis_url)
    try:
        report = measure(args)
    except Exception as error:  # one line for the harness, whatever went wrong
        print(f"bench.tick: {type(error).__name__}: {error}".strip(), file=sys.stderr)
        return 2
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
