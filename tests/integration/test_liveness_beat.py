"""A heartbeat's row as one beat writes it: who, which queues, and the runs in progress, as
the run hooks tell it; a clean exit removes it."""

from datetime import UTC, datetime, timedelta

from workers.engine.db import Pool
from workers.engine.hooks import Claimed, Finished
from workers.engine.liveness import Heartbeat, processes
from workers.engine.runs import RunOutcome, Status
from workers.schedule import JOBS

SLOT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_a_beat_records_the_runs_in_progress_and_a_clean_exit_removes_it(db, conn):
    pool = Pool(db.url, max_size=2)
    beat = Heartbeat(pool, "worker", every=timedelta(seconds=10), queues=("default", "billing"),
                     threads=4)
    job = JOBS["coin_deduction"]
    try:
        beat.run_claimed(Claimed(job=job, scheduled_for=SLOT, attempt=2, trigger="retry",
                                 run_id=1))
        beat.beat()
        [row] = processes(conn, timedelta(seconds=60))
        assert (row["kind"], row["queues"], row["threads"], row["alive"]) == (
            "worker", ["billing", "default"], 4, True)
        [running] = row["running"]
        assert (running["job"], running["scheduled_for"], running["attempt"]) == (
            "coin_deduction", SLOT.isoformat(), 2)

        outcome = RunOutcome(job=job.name, scheduled_for=SLOT, status=Status.SUCCEEDED,
                             attempt=2, result={})
        beat.run_finished(Finished(job=job, outcome=outcome, trigger="retry", duration=0.1))
        beat.beat()
        assert processes(conn, timedelta(seconds=60))[0]["running"] == []
        # Judged by its age: stale once older than asked.
        conn.execute("UPDATE job_processes SET beat_at = now() - interval '2 minutes'")
        assert processes(conn, timedelta(seconds=60))[0]["alive"] is False

        beat.stop()
        assert processes(conn, timedelta(seconds=60)) == []
    finally:
        pool.close()
