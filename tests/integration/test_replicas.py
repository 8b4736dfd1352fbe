"""Replicas as separate processes on one database: the advisory lock makes a job a
singleton, and a SIGKILLed holder frees it with its writes rolled back."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from workers.engine.db import queries
from workers.engine.runs import RunOptions, Status, run_job
from workers.schedule import JOBS

HOLDER = Path(__file__).with_name("lock_holder.py")
JOB = JOBS["badge_assignment"]
SLOT = datetime(2026, 11, 22, 18, 31, tzinfo=UTC)
OPTIONS = RunOptions(timezone=ZoneInfo("Asia/Kolkata"), lock_timeout_ms=2000,
                     abandon_grace=timedelta(seconds=60))
#: Upper bound for another process to get somewhere (seconds); polled, never slept out.
PATIENCE = 30


class Replica:
    def __init__(self, db, tmp_path: Path, slot: datetime, name: str):
        self.release = tmp_path / f"release-{name}"
        self.process = subprocess.Popen(
            [sys.executable, str(HOLDER), JOB.name, slot.isoformat(), str(self.release)],
            env=db.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_holding(self) -> None:
        line = self.process.stdout.readline().strip()
        assert line == "holding", f"replica did not take the lock: {line!r} " \
                                  f"{self.process.stderr.read()[-2000:]}"

    def finish(self) -> dict:
        self.release.touch()
        out, err = self.process.communicate(timeout=PATIENCE)
        assert self.process.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=PATIENCE)  # reaps it and closes its pipes


@pytest.fixture
def replicas(db, tmp_path):
    started = []

    def start(slot: datetime, name: str) -> Replica:
        replica = Replica(db, tmp_path, slot, name)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        if replica.process.returncode is None:
            replica.kill()


def rows(conn):
    return {row["scheduled_for"]: row for row in conn.execute(
        "SELECT * FROM job_runs WHERE job = %s", [JOB.name])}


def abandoned_or_running(conn) -> dict:
    conn.execute(queries("runs.sql")["mark_abandoned"], {"jobs": [JOB.name]})
    return rows(conn)[SLOT]


def test_two_processes_racing_for_a_job_one_runs_and_one_records_skipped(conn, replicas):
    first = replicas(SLOT, "first")
    first.wait_holding()
    second = replicas(SLOT + timedelta(minutes=1), "second")
    second.release.touch()  # were it to get the lock, it would finish at once

    assert second.finish()["status"] == "skipped"
    assert first.finish()["status"] == "succeeded"
    by_slot = rows(conn)
    assert by_slot[SLOT]["status"] == "succeeded"
    assert by_slot[SLOT + timedelta(minutes=1)]["status"] == "skipped"
    assert by_slot[SLOT + timedelta(minutes=1)]["skip_reason"].startswith("locked")


def test_two_processes_on_the_same_slot_run_it_once(conn, replicas):
    first = replicas(SLOT, "first")
    first.wait_holding()
    second = replicas(SLOT, "second")
    second.release.touch()

    outcome = second.finish()
    assert outcome["status"] == "duplicate" and "already running" in outcome["reason"]
    assert first.finish()["status"] == "succeeded"
    [row] = rows(conn).values()
    assert (row["status"], row["attempt"]) == ("succeeded", 1)


def test_the_lock_is_free_again_after_its_holder_is_sigkilled(conn, replicas):
    holder = replicas(SLOT, "holder")
    holder.wait_holding()
    assert run_job(conn, JOB, SLOT + timedelta(days=1),
                   OPTIONS, work=lambda c, r: {}).status is Status.SKIPPED

    holder.kill()

    deadline = time.monotonic() + PATIENCE
    slot = SLOT + timedelta(days=2)
    while (outcome := run_job(conn, JOB, slot, OPTIONS, work=lambda c, r: {})).status \
            is Status.SKIPPED:
        assert time.monotonic() < deadline, "the killed holder's lock was never released"
        slot += timedelta(minutes=1)
        time.sleep(0.05)
    assert outcome.status is Status.SUCCEEDED

    # The lock goes with the killed backend's transaction; the backend itself may linger a
    # moment in pg_stat_activity, so its run is recognised as abandoned once it has gone.
    while (killed := abandoned_or_running(conn))["status"] == "running":
        assert time.monotonic() < deadline, "the killed run was never seen as abandoned"
        time.sleep(0.05)
    assert killed["status"] == "abandoned"
    assert conn.execute("SELECT count(*) AS n FROM users").fetchone()["n"] == 0, \
        "the killed run's writes must have rolled back"
    rerun = run_job(conn, JOB, SLOT, OPTIONS, work=lambda c, r: {})
    assert (rerun.status, rerun.attempt) == (Status.SUCCEEDED, 2)
