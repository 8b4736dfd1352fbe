"""One chaos run, in order: start, storm, settle, judge; and cleanup whatever happens.

The package docstring (chaos/__init__.py) tells the story; this module keeps the order
and the deadlines. Every wait polls with a deadline; nothing waits for a wall-clock
minute. Progress lines go to stderr, prefixed with the real seconds since the start and
the logical time.
"""

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import redis
from psycopg.rows import dict_row

from chaos import checks
from chaos.clock import LogicalClock, wall_minute
from chaos.env import HEARTBEAT_TIMEOUT_SECONDS, TIMEZONE
from chaos.faults import KINDS, Injector, plan
from chaos.processes import WORKER_READY, Child, dramatiq_worker, python_module
from chaos.servers import HarnessError, Servers
from chaos.traffic import populate
from workers.engine.schema import apply_schema
from workers.schedule import JOBS

#: The Saathii API's own schema, for a run with traffic as the real API.
API_SCHEMA = Path(__file__).with_name("saathii_api.sql")

#: Longest wait for a dramatiq worker to boot (seconds).
BOOT_TIMEOUT = 90
#: Longest wait for the queues to drain while settling (seconds): a killed worker's
#: messages come back after its heartbeat timeout, at the next maintenance.
DRAIN_TIMEOUT = 90
#: Longest wait for the schedulers and the traffic to finish on their own at the end of
#: logical time (seconds).
FINISH_TIMEOUT = 30
#: Longest wait for the last running job to finish after the final round (seconds).
IDLE_TIMEOUT = 60
#: The final round: these jobs at the end of logical time, through the CLI, in order:
#: first the catch-up (the missed-run policy), whose runs the workers do before the rest
#: (a day's calls are settled once its badges are assigned); then every recurring job's
#: last run, each marking its own abandoned runs on the way.
CATCH_UP = "catch_up"
FINAL_ROUND = (*checks.billing_job_names(), "call_cleanup", "presence_cleanup")
FINAL_ATTEMPTS = 10
SCHEDULERS = ("A", "B")
POLL = 0.2  # seconds


@dataclass(frozen=True)
class Options:
    duration: float
    workers: int
    seed: int
    minute_seconds: float
    start_at: str | None
    fault_interval: float
    kinds: tuple[str, ...]
    customers: int
    listeners: int
    keep: bool
    #: Traffic as the real Saathii API ('broken' or 'fixed' end route), on its own schema.
    api: str | None = None


class Harness:
    def __init__(self, options: Options, directory: Path, servers: Servers,
                 env: dict[str, str]):
        self.options, self.directory, self.servers, self.env = options, directory, servers, env
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timezone = ZoneInfo(TIMEZONE)
        self.workers: list[Child] = [dramatiq_worker(i + 1, env, self.logs)
                                     for i in range(options.workers)]
        #: Held by whoever kills, restarts or inspects the workers.
        self.workers_lock = threading.Lock()
        self.schedulers: list[Child] = []
        self.traffic: Child | None = None
        self.clock: LogicalClock | None = None
        self.injector: Injector | None = None
        self.began = time.monotonic()
        self.timings: dict[str, float] = {}
        self.unexpected_exits = 0
        self.settling: dict = {}

    def progress(self, message: str) -> None:
        logical = ""
        if self.clock is not None:
            logical = f" L={min(self.clock.now(), self.clock.end).astimezone(self.timezone):%H:%M}"
        print(f"chaos +{time.monotonic() - self.began:6.1f}s{logical} {message}",
              file=sys.stderr, flush=True)

    def children(self) -> list[Child]:
        return [*self.workers, *self.schedulers, *([self.traffic] if self.traffic else [])]

    def run(self) -> dict:
        for phase in (self.start, self.storm, self.settle):
            began = time.monotonic()
            phase()
            self.timings[phase.__name__] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        summary = self.judge()
        summary["timings_s"] = {**self.timings, "judge": round(time.monotonic() - began, 1),
                                "total": round(time.monotonic() - self.began, 1)}
        return summary

    # Start ----------------------------------------------------------------------------

    def start(self) -> None:
        options = self.options
        self.servers.start()
        self.progress(f"PostgreSQL {self.servers.database_url}, Redis {self.servers.redis_url}")
        minutes = max(1, round(options.duration / options.minute_seconds))
        start = logical_start(options.start_at, self.timezone)
        first_day = start.astimezone(self.timezone).date()
        days = [first_day + timedelta(days=d) for d in range(-1, minutes // 1440 + 3)]
        with psycopg.connect(self.servers.database_url, autocommit=True,
                             row_factory=dict_row) as conn:
            if options.api:  # the API's own database, which db init then adopts
                conn.execute(API_SCHEMA.read_text())
            apply_schema(conn)
            populate(conn, random.Random(f"{options.seed}:population"),
                     customers=options.customers, listeners=options.listeners,
                     seen=start, days=days, api=bool(options.api))
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            if not worker.wait_ready(WORKER_READY, BOOT_TIMEOUT):
                raise HarnessError(f"{worker.name} did not boot; see {worker.log}")
        self.progress(f"{len(self.workers)} workers ready")
        self.clock = LogicalClock(start=start, real_start=time.time(),
                                  minute_seconds=options.minute_seconds, minutes=minutes)
        for name in SCHEDULERS:
            self.schedulers.append(python_module(f"scheduler-{name}", "chaos.clock",
                                                 ["--name", name, *self.clock.argv()],
                                                 self.env, self.logs))
        api = ["--api", options.api] if options.api else []
        self.traffic = python_module("traffic", "chaos.traffic",
                                     ["--seed", str(options.seed), *api, *self.clock.argv()],
                                     self.env, self.logs)
        for child in (*self.schedulers, self.traffic):
            child.start()

    # Storm ----------------------------------------------------------------------------

    def storm(self) -> None:
        faults = plan(random.Random(f"{self.options.seed}:faults"),
                      duration=self.options.duration, interval=self.options.fault_interval,
                      kinds=self.options.kinds)
        self.progress(f"storm: {self.clock.minutes} logical minutes from "
                      f"{self.clock.start.astimezone(self.timezone):%Y-%m-%d %H:%M %Z}, "
                      f"{len(faults)} faults planned")
        self.injector = Injector(self, faults, random.Random(f"{self.options.seed}:injector"))
        self.injector.start()
        end = self.clock.real(self.clock.end)
        while time.time() < end:
            if self.injector.error is not None:
                raise self.injector.error
            for child in (*self.schedulers, self.traffic):
                if not child.alive() and child.process.returncode != 0:
                    raise HarnessError(f"{child.name} exited with {child.process.returncode}"
                                       f" during the storm; see {child.log}")
            self.restart_dead_workers()
            time.sleep(POLL)
        self.injector.stop()
        self.injector.join()
        if self.injector.error is not None:
            raise self.injector.error

    def restart_dead_workers(self) -> list[Child]:
        """Start again any worker that exited without being killed by a fault."""
        restarted = []
        with self.workers_lock:
            for worker in self.workers:
                if not worker.alive():
                    self.unexpected_exits += 1
                    self.progress(f"{worker.name} exited with {worker.process.returncode} by "
                                  f"itself; restarting it (see {worker.log})")
                    worker.start()
                    restarted.append(worker)
        return restarted

    # Settle ---------------------------------------------------------------------------

    def settle(self) -> None:
        for child in (*self.schedulers, self.traffic):
            try:
                child.process.wait(timeout=FINISH_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.progress(f"{child.name} still running at the end of logical time; "
                              f"stopping it")
                child.terminate()
        self.servers.ensure_running()
        self.restart_dead_workers()
        for worker in self.workers:
            if not worker.wait_ready(WORKER_READY, BOOT_TIMEOUT):
                raise HarnessError(f"{worker.name} did not boot; see {worker.log}")
        self.progress("storm over: servers up, workers alive; draining the queues")
        self.settling["drained_before_final_round"] = self.drain()
        final = self.clock.end
        self.settling["final_round"] = {CATCH_UP: self.run_task(CATCH_UP, final)}
        self.settling["drained_after_catch_up"] = self.drain() and self.wait_idle()
        self.settling["final_round"].update({job: self.run_task(job, final)
                                             for job in FINAL_ROUND})
        self.progress(f"final round at {final.astimezone(self.timezone):%H:%M}: "
                      f"{self.settling['final_round']}")
        self.settling["drained_after_final_round"] = self.drain()
        self.settling["idle"] = self.wait_idle()
        self.settling["worker_exit_codes"] = [worker.terminate() for worker in self.workers]
        self.progress(f"settled: {self.settling}")

    def queues(self) -> list[str]:
        names = sorted({job.queue for job in JOBS.values()})
        return names + [f"{name}.DQ" for name in names]

    def drain(self) -> bool:
        """Whether every queue emptied (nothing waiting, nothing delivered and unacked)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with redis.Redis.from_url(self.servers.redis_url, socket_timeout=5) as client:
            while time.monotonic() < deadline:
                pipe = client.pipeline(transaction=False)
                for queue in self.queues():
                    pipe.llen(f"dramatiq:{queue}")
                    pipe.hlen(f"dramatiq:{queue}.msgs")
                if not any(pipe.execute()):
                    return True
                time.sleep(POLL)
        self.progress(f"queues not drained after {DRAIN_TIMEOUT} s")
        return False

    def run_task(self, job: str, as_of: datetime) -> str:
        """Run `job` at `as_of` with the real CLI until it succeeds (a run skipped because
        another holds the lock, or failed, is tried again); its last status."""
        status = "not run"
        for _ in range(FINAL_ATTEMPTS):
            done = subprocess.run([sys.executable, "-m", "workers", "run-task", job, "--as-of",
                                   as_of.isoformat()], env=self.env, cwd=self.logs,
                                  capture_output=True, text=True, timeout=120)
            outcome = last_json(done.stdout) or {"status": f"exit {done.returncode}"}
            status = outcome["status"]
            if status in ("succeeded", "duplicate"):
                return status
            self.progress(f"final {job}: {outcome} {done.stderr.strip()[-300:]}")
            time.sleep(1)
        return status

    def wait_idle(self) -> bool:
        """Whether no run is in progress any more (within IDLE_TIMEOUT): no 'running' row
        whose database session is alive. (One whose session is gone is the judge's.)"""
        deadline = time.monotonic() + IDLE_TIMEOUT
        with psycopg.connect(self.servers.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                if not conn.execute(
                        "SELECT count(*) FROM job_runs r WHERE r.status = 'running'"
                        " AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid ="
                        " r.backend_pid AND a.backend_start = r.backend_start)").fetchone()[0]:
                    return True
                time.sleep(POLL)
        return False

    # Judge ----------------------------------------------------------------------------

    def judge(self) -> dict:
        violations, described = checks.judge(
            self.servers.database_url, start=self.clock.start, final=self.clock.end,
            heartbeat=timedelta(seconds=HEARTBEAT_TIMEOUT_SECONDS), timezone=TIMEZONE)
        calls = {row["state"]: row["calls"] for row in described["calls"]}
        [charges], [earnings], [ticks], [by_api] = (
            described["charges"], described["earnings"], described["ticks"],
            described["paid_by_api"])
        summary = {
            "seed": self.options.seed,
            "duration_s": self.options.duration,
            "workers": self.options.workers,
            "api": self.options.api,
            "billing_shards": len(checks.billing_job_names()),
            "minute_seconds": self.options.minute_seconds,
            "simulated_minutes": self.clock.minutes,
            "logical_start": self.clock.start.astimezone(self.timezone).isoformat(),
            "logical_end": self.clock.end.astimezone(self.timezone).isoformat(),
            "calls": sum(calls.values()),
            "calls_by_state": calls,
            **charges,
            "money_earned": earnings["money_earned"],
            "paid_by_api": by_api,
            "minutes_ticked": ticks["minutes_ticked"],
            "faults": {kind: self.injector.injected[kind] for kind in KINDS},
            "faults_missed": dict(self.injector.missed),
            "worker_exits_unexpected": self.unexpected_exits,
            "runs": {row["job"]: row["statuses"] for row in described["runs"]},
            "run_problems": described["run_problems"],
            "traffic": last_json(self.traffic.output()),
            "schedulers": [last_json(child.output()) for child in self.schedulers],
            "settle": self.settling,
            "violation_count": len(violations),
            "violations": checks.listed(violations),
        }
        self.progress(f"{len(violations)} violations")
        return summary

    # Cleanup --------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop every child and both servers; safe to call in any state, more than once."""
        if self.injector is not None:
            self.injector.stop()
            self.injector.join(timeout=120)
        for child in self.children():
            child.terminate(timeout=10)
        self.servers.stop()

    def tails(self, lines: int = 15) -> str:
        """The end of every child's log, for a run that failed."""
        out = []
        for child in self.children():
            text = "\n".join(child.output().splitlines()[-lines:])
            out.append(f"----- {child.name} ({child.log})\n{text}")
        return "\n".join(out)


def logical_start(start_at: str | None, timezone: ZoneInfo) -> datetime:
    """Where logical time starts: the wall clock's current minute, or the next time the
    local clock reads `start_at` (HH:MM), to put a chosen hour, such as midnight and the
    daily badges, inside the storm. Never before the wall clock's minute: periodiq's
    middleware would take the slots for stale."""
    now = wall_minute()
    if start_at is None:
        return now
    at = time_of_day.fromisoformat(start_at)
    local = now.astimezone(timezone)
    start = datetime.combine(local.date(), at, timezone)
    if start < local:
        start = datetime.combine(local.date() + timedelta(days=1), at, timezone)
    return start.astimezone(now.tzinfo)


def last_json(text: str) -> dict | None:
    """The last line of `text` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None
