"""The health checks: each a figure and a verdict (ok, warn, fail), from PostgreSQL, Redis,
the heartbeats, the job table's runs and the machine. `python -m workers health` prints
them and exits 0 healthy, 1 degraded (a warn), 2 failing; the health_check job will record
them. A check that cannot be made (its server is down) is not reported as passing: the
server's own check fails, and the checks that need it are left out.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from zoneinfo import ZoneInfo

from workers.engine import liveness, queues, redis_client
from workers.engine.db import connect, queries, schema_version
from workers.engine.jobs import Job
from workers.errors import Unavailable, WorkersError
from workers.observability.overdue import State, job_states
from workers.settings import Settings

#: Round trips slower than this are a warning (seconds).
SLOW_ROUND_TRIP = 0.5
#: A waiting message older than this is a warning, older than FAIL_QUEUE_AGE a failure
#: (seconds): a worker picks a message up within a second when one is free.
WARN_QUEUE_AGE, FAIL_QUEUE_AGE = 60, 300
#: Free disk or memory below these shares is a warning / a failure.
WARN_FREE, FAIL_FREE = 0.10, 0.03
#: A 1-minute load above this many times the CPUs is a warning.
WARN_LOAD_PER_CPU = 2.0
#: How far back a failed run is reported.
FAILURES_SINCE = timedelta(hours=1)


class Verdict(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    #: The figure the verdict was made from (a number, or a few named numbers).
    figure: object
    detail: str = ""

    def as_json(self) -> dict:
        return {"check": self.name, "verdict": str(self.verdict), "figure": self.figure,
                "detail": self.detail}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return max((check.verdict for check in self.checks), default=Verdict.OK)

    @property
    def exit_code(self) -> int:
        return int(self.verdict)

    def as_json(self) -> dict:
        return {"verdict": str(self.verdict), "checks": [c.as_json() for c in self.checks]}


def _timed(call) -> tuple[object, float]:
    began = time.monotonic()
    value = call()
    return value, time.monotonic() - began


def _latency(name: str, seconds: float) -> Check:
    verdict = Verdict.WARN if seconds > SLOW_ROUND_TRIP else Verdict.OK
    return Check(name, verdict, round(seconds * 1000, 1), "round trip, ms")


def check_all(settings: Settings, jobs: Iterable[Job], now: datetime | None = None) -> Report:
    """Every check, as of `now` (which slots are due; the processes' beats are judged by
    the database's clock)."""
    jobs, now = list(jobs), now or datetime.now(UTC)
    report = Report()
    try:
        conn = connect(settings.database_url, autocommit=True)
    except Unavailable as error:
        report.checks.append(Check("postgres", Verdict.FAIL, None, str(error)))
    else:
        with conn:
            report.checks += database_checks(
                conn, jobs, now, settings.timezone,
                timedelta(seconds=settings.process_stale_seconds))
    report.checks += redis_checks(settings.redis_url, jobs, now)
    report.checks += machine_checks(settings.log_dir)
    return report


def database_checks(conn, jobs: list[Job], now: datetime, timezone: ZoneInfo,
                    stale_after: timedelta) -> list[Check]:
    """PostgreSQL's round trip, the schema, the processes' heartbeats and the jobs."""
    _, seconds = _timed(lambda: conn.execute("SELECT 1").fetchone())
    checks = [_latency("postgres", seconds)]
    try:
        schema_version(conn)
    except WorkersError as error:
        return [*checks, Check("schema", Verdict.FAIL, None, str(error))]
    checks += process_checks(liveness.processes(conn, stale_after), jobs)
    return checks + job_checks(conn, jobs, now, timezone)


def _who(process: dict) -> str:
    return f"{process['kind']} {process['host']}:{process['pid']}"


def process_checks(known: list[dict], jobs: list[Job]) -> list[Check]:
    """Live workers per queue (none: failing, naming the dead that served it) and live
    schedulers (exactly one; none is failing, more a warning)."""
    checks = []
    workers = [p for p in known if p["kind"] == "worker"]
    for queue in sorted({job.queue for job in jobs}):
        serving = [p for p in workers if queue in p["queues"]]
        alive = [p for p in serving if p["alive"]]
        dead = [p for p in serving if not p["alive"]]
        gone = "; ".join(f"{_who(p)} last beat {p['beat_age']:.0f} s ago" for p in dead)
        if alive:
            checks.append(Check(f"workers:{queue}", Verdict.OK, len(alive),
                                f"{sum(p['threads'] for p in alive)} threads"))
        else:
            checks.append(Check(f"workers:{queue}", Verdict.FAIL, 0,
                                f"no live worker serves {queue}"
                                + (f" (dead: {gone})" if gone else "")))
    schedulers = [p for p in known if p["kind"] == "scheduler"]
    alive = [p for p in schedulers if p["alive"]]
    if not alive:
        dead = "; ".join(f"{_who(p)} last beat {p['beat_age']:.0f} s ago" for p in schedulers)
        checks.append(Check("schedulers", Verdict.FAIL, 0,
                            "no live scheduler: nothing is sent on time"
                            + (f" (dead: {dead})" if dead else "")))
    elif len(alive) > 1:
        checks.append(Check("schedulers", Verdict.WARN, len(alive),
                            "more than one live scheduler: every slot is sent twice (harmless,"
                            " not the intended deployment): "
                            + ", ".join(_who(p) for p in alive)))
    else:
        checks.append(Check("schedulers", Verdict.OK, 1, _who(alive[0])))
    return checks


def job_checks(conn, jobs: list[Job], now: datetime, timezone: ZoneInfo) -> list[Check]:
    """Per job: overdue (failing), overrunning or failed in the last hour (warnings),
    paused (ok, said so)."""
    states = job_states(conn, jobs, now, timezone)
    failures = {row["job"]: row for row in conn.execute(queries("health.sql")["recent_failures"], {
        "jobs": [job.name for job in jobs], "since": now - FAILURES_SINCE, "now": now})}
    checks = []
    for job in jobs:
        state, failure = states[job.name], failures.get(job.name)
        verdict = {State.OVERDUE: Verdict.FAIL, State.OVERRUNNING: Verdict.WARN}.get(
            state.state, Verdict.OK)
        detail = state.detail
        if failure is not None:
            verdict = max(verdict, Verdict.WARN)
            at = failure["started_at"].astimezone(timezone).isoformat(timespec="seconds")
            detail += f"; failed at {at}: {failure['error']}"
        checks.append(Check(f"job:{job.name}", verdict, str(state.state), detail))
    return checks


def redis_checks(url: str, jobs: list[Job], now: datetime) -> list[Check]:
    """Redis's round trip; per queue, its oldest waiting message and its dead letters."""
    try:
        with (redis_client.client(url) as client,
              redis_client.failures_as_ours(redis_client.describe(url))):
            _, seconds = _timed(client.ping)
            checks = [_latency("redis", seconds)]
            stats = queues.queue_stats(client, sorted({job.queue for job in jobs}), now)
    except Unavailable as error:
        return [Check("redis", Verdict.FAIL, None, str(error))]
    for queue in stats:
        age = queue.oldest_age or 0
        verdict = (Verdict.FAIL if age > FAIL_QUEUE_AGE
                   else Verdict.WARN if age > WARN_QUEUE_AGE else Verdict.OK)
        checks.append(Check(f"queue:{queue.queue}", verdict, queue.as_json(),
                            f"{queue.waiting} waiting, oldest {age:.0f} s"))
        checks.append(Check(f"dead_letters:{queue.queue}",
                            Verdict.WARN if queue.dead else Verdict.OK, queue.dead,
                            "`python -m workers dead-letters list`" if queue.dead else ""))
    return checks


def _share_check(name: str, free: int, total: int, what: str) -> Check:
    share = free / total if total else 1.0
    verdict = (Verdict.FAIL if share < FAIL_FREE
               else Verdict.WARN if share < WARN_FREE else Verdict.OK)
    return Check(name, verdict, round(share, 3),
                 f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB {what}")


def machine_checks(log_dir: Path | None) -> list[Check]:
    """Free disk where we write (LOG_DIR), free memory and the load of this machine."""
    checks = []
    if log_dir is not None:
        usage = shutil.disk_usage(log_dir)
        checks.append(_share_check("disk:LOG_DIR", usage.free, usage.total, f"at {log_dir}"))
    memory = _meminfo()
    if memory:
        checks.append(_share_check("memory", memory["MemAvailable"], memory["MemTotal"],
                                   f"on {socket.gethostname()}"))
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    checks.append(Check("load", Verdict.WARN if load > WARN_LOAD_PER_CPU * cpus else Verdict.OK,
                        round(load, 2), f"1-minute load on {cpus} CPUs"))
    return checks


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (Linux); empty elsewhere."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024
    return values if {"MemAvailable", "MemTotal"} <= values.keys() else {}


def own_process_check(settings: Settings, kind: str) -> Report:
    """For a container's healthcheck: a live `kind` beats from this host."""
    try:
        with connect(settings.database_url, autocommit=True) as conn:
            known = liveness.processes(conn, timedelta(seconds=settings.process_stale_seconds))
    except Unavailable as error:
        return Report([Check(f"self:{kind}", Verdict.FAIL, None, str(error))])
    host = socket.gethostname()
    mine = [p for p in known if p["kind"] == kind and p["host"] == host]
    alive = [p for p in mine if p["alive"]]
    if alive:
        return Report([Check(f"self:{kind}", Verdict.OK, len(alive),
                             ", ".join(f"pid {p['pid']} beat {p['beat_age']:.0f} s ago"
                                       for p in alive))])
    return Report([Check(f"self:{kind}", Verdict.FAIL, 0, f"no live {kind} beats from {host}")])
