"""The health_check job at explicit logical times: what it records, and that a check turning
failing is alerted once and its recovery logged once. The processes it judges are rows of
job_processes, beating (or not) by the database's clock, as real ones write them."""

import logging
import socket
import uuid
from datetime import UTC, datetime, timedelta

from workers.engine import runtime
from workers.engine.runs import Status, run_job
from workers.schedule import JOBS

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
EVERY = timedelta(minutes=5)
BEAT = """INSERT INTO job_processes (process_id, kind, host, pid, version, started_at, beat_at,
                                    queues, threads)
          VALUES (%(id)s, %(kind)s, %(host)s, %(pid)s, 'test', now(), now(), %(queues)s, 2)"""


def check(conn, slot: datetime) -> dict:
    outcome = run_job(conn, JOBS["health_check"], slot, runtime.current().run_options())
    assert outcome.status is Status.SUCCEEDED, outcome
    return outcome.result


def beating(conn, kind: str, queues: list[str]) -> None:
    conn.execute(BEAT, {"id": uuid.uuid4(), "kind": kind, "host": socket.gethostname(),
                        "pid": 1, "queues": queues})


def test_a_failing_check_is_alerted_once_and_its_recovery_logged_once(conn, caplog):
    caplog.set_level(logging.INFO, logger="workers.health")
    every_queue = sorted({job.queue for job in JOBS.values()})

    first = check(conn, T0)  # nothing is running
    assert first["verdict"] == "fail"
    assert {"schedulers", "workers:billing", "workers:default"} <= set(first["failing"])
    assert sorted(first["alerted"]) == first["failing"]
    second = check(conn, T0 + EVERY)  # still failing: nothing told again
    assert set(second["failing"]) == set(first["failing"]) - {"job:health_check"}  # T0 ran
    assert second["alerted"] == []

    beating(conn, "worker", every_queue)
    beating(conn, "scheduler", [])
    third = check(conn, T0 + 2 * EVERY)
    assert {"schedulers", "workers:billing", "workers:default"} <= set(third["recovered"])
    assert not {name for name in third["failing"] if name.startswith(("workers:", "sched"))}

    lines = [record.getMessage() for record in caplog.records if record.name == "workers.health"]
    assert sorted(line for line in lines if "schedulers" in line) == [
        "health check schedulers has recovered",
        "health check schedulers is failing: no live scheduler: nothing is sent on time"]
    rows = conn.execute("SELECT checked_for, verdict, checks FROM health_checks"
                        " ORDER BY checked_for").fetchall()
    assert [row["checked_for"] for row in rows] == [T0, T0 + EVERY, T0 + 2 * EVERY]
    recorded = {c["check"]: c for c in rows[2]["checks"]}
    assert recorded["schedulers"] == {"check": "schedulers", "verdict": "ok", "figure": 1,
                                      "detail": f"scheduler {socket.gethostname()}:1"}
    assert recorded["postgres"]["verdict"] == "ok"


def test_an_overdue_job_is_judged_at_the_runs_slot(conn):
    slot = T0 + timedelta(hours=1)  # nothing ran the hour before it
    run_job(conn, JOBS["coin_deduction"], slot - timedelta(minutes=1),
            runtime.current().run_options())

    result = check(conn, slot)

    assert "job:coin_deduction" not in result["failing"]  # its slot past the grace ran
    assert "job:presence_cleanup" in result["failing"]  # 10:55 never did
