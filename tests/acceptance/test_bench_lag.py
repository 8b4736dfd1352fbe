"""The lag bench's arithmetic on known samples, and its command line's refusals.

The bench itself runs real minutes (`python -m bench.lag`); what it computes from its
measurements, and what it refuses before starting anything, is checked here in seconds.
"""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import lag
from bench.lag import JOB, Minute

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
B = datetime(2026, 11, 22, 20, 5, tzinfo=UTC)  # a minute boundary: 01:35 in Kolkata


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(10, 0, -1)]  # 10 samples, unsorted
    assert lag.percentile(values, 50) == 5.0
    assert lag.percentile(values, 90) == 9.0
    assert lag.percentile(values, 99) == 10.0  # of 10 samples, p99 is the max
    assert lag.percentile([float(v) for v in range(1, 201)], 99) == 198.0
    assert lag.percentile([3.0], 50) == lag.percentile([3.0], 99) == 3.0


def test_summary_counts_succeeded_minutes_only():
    minutes = [Minute(B + timedelta(minutes=i), "succeeded", lag=late,
                      parts=dict.fromkeys(lag.PARTS, late / 4))
               for i, late in enumerate([0.2, 0.4, 0.3, 5.0])]
    minutes.append(Minute(B + timedelta(minutes=4), "skipped", reason="locked"))
    summary = lag.summarize(minutes)
    assert summary["lag"] == {"p50": 0.3, "p99": 5.0, "max": 5.0}
    assert summary["run"] == {"p50": 0.075, "p99": 1.25, "max": 1.25}
    printed = lag.table(minutes, summary)
    assert "01:39  skipped" in printed and "locked" in printed
    assert printed.splitlines()[-2].split()[:2] == ["p99", "5.000"]


def test_a_minute_is_cut_at_send_pickup_claim_and_finish():
    message_id = "4ff995f1-c370-454d-a5c3-cea7d3026148"
    scheduler_log = (
        f"[2026-11-22 20:05:00,002] [PID 9] [MainThread] [periodiq] [INFO] Scheduling "
        f"Actor({JOB}) at 2026-11-23 01:35:00+05:30.\n")
    worker_log = (
        f"[2026-11-22 20:05:00,402] [PID 7] [Thread-9] [periodiq] [INFO] Processing "
        f"{message_id}:{JOB}() scheduled at 2026-11-23 01:35:00+05:30.\n")
    # Log times are the machine's local time; the slot is the instant periodiq named.
    assert lag.sent_times(scheduler_log) == {
        B: datetime(2026, 11, 22, 20, 5, 0, 2_000).astimezone()}
    assert lag.picked_times(worker_log) == {
        message_id: datetime(2026, 11, 22, 20, 5, 0, 402_000).astimezone()}
    runs = [{"job": JOB, "status": "succeeded", "message_id": message_id,
             "started_at": B + timedelta(seconds=0.41), "finished_at": B + timedelta(seconds=1),
             "result": {"minutes_charged": 10, "calls_ended": {}}, "reason": None},
            {"job": "call_cleanup", "started_at": B, "finished_at": B + timedelta(seconds=3),
             "result": {"minutes_charged": 0}}]
    minute = lag.minute_from(B, runs, {B: B + timedelta(seconds=0.002)},
                             {message_id: B + timedelta(seconds=0.402)})
    assert minute.lag == 1.0
    assert minute.parts == {"sent": 0.002, "wait": 0.4, "claim": 0.008, "run": 0.59}
    assert minute.beside == {"call_cleanup": {"run": 3.0, "minutes_charged": 0}}


def test_a_tick_that_billed_less_than_every_call_is_a_problem():
    ledger = {"ongoing_calls": 10, "spend_rows": 30, "owed_minutes": 30}
    full = Minute(B, "succeeded", lag=0.5, minutes_charged=10, calls_ended={})
    assert lag.billing_problems([full], 10, ledger) == []
    short = Minute(B, "succeeded", lag=0.5, minutes_charged=7,
                   calls_ended={"heartbeat_timeout": 3})
    assert lag.billing_problems([short], 10, {**ledger, "ongoing_calls": 7})
    # Every 10 minutes call_cleanup may charge the minute first: the slot is billed.
    raced = Minute(B, "succeeded", lag=0.5, minutes_charged=0,
                   beside={"call_cleanup": {"run": 0.4, "minutes_charged": 10}})
    assert raced.billed() == 10
    assert lag.billing_problems([raced], 10, ledger) == []
    assert "call_cleanup 0.400s billed 10" in lag.table([raced], lag.summarize([raced]))


@pytest.mark.parametrize("args", [["--minutes", "0"], ["--calls", "-1"],
                                  ["--worker-timeout", "0"]])
def test_bad_arguments_exit_2_with_one_line_before_starting_anything(args, tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.lag", *args,
                           "--out", str(tmp_path / "lag.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bench.lag: ")
    assert not (tmp_path / "lag.json").exists()
