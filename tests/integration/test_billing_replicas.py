"""Billing ticks from several processes at once, bypassing the job's advisory lock on
purpose: exactly-once charging and settling must hold by the ledger's unique keys alone.
Then a ticking process is SIGKILLed mid-work: its transaction rolls back whole."""

import random
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from ledger import add_user, check_billed, check_ledger, spent_minutes, start_call

TICKER = Path(__file__).with_name("ticker.py")
IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
MINUTE = timedelta(minutes=1)
LAST_TICK = T0 + 15 * MINUTE
PATIENCE = 120  # seconds a process may take


def customers(conn, count: int) -> list[tuple[int, int, int]]:
    """(call, caller, minutes its coins pay for in all) for `count` audio calls."""
    rng = random.Random(7)
    listener = add_user(conn, role="listener", seen=T0 + timedelta(days=1))
    made = []
    for _ in range(count):
        minutes = rng.randint(1, 25)
        caller = add_user(conn, coins=10 * minutes, seen=T0 + timedelta(days=1))
        made.append((start_call(conn, caller, listener, T0), caller, minutes))
    return made


def ticks(seed: int) -> list[str]:
    """Every minute up to LAST_TICK, shuffled, with duplicates: late and repeated ticks."""
    rng = random.Random(seed)
    times = [T0 + k * MINUTE for k in range(16)] * 2
    rng.shuffle(times)
    return [at.isoformat() for at in times + [LAST_TICK]]


def test_concurrent_ticks_from_several_processes_charge_each_minute_once(db, conn):
    calls = customers(conn, 30)
    processes = [subprocess.Popen([sys.executable, str(TICKER), *ticks(seed)], env=db.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for seed in range(4)]
    for process in processes:
        _, err = process.communicate(timeout=PATIENCE)
        assert process.returncode == 0, err[-3000:]

    check_billed(conn, calls, due=16)  # minutes started by LAST_TICK
    check_ledger(conn)


def test_a_tick_killed_mid_work_leaves_nothing_half_done(db, conn):
    calls = customers(conn, 30)
    killed = subprocess.Popen([sys.executable, str(TICKER), "--forever", LAST_TICK.isoformat(),
                               (T0 + 3 * MINUTE).isoformat()], env=db.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert killed.stdout.readline().strip() == "ready"
    # let it tick at least once, then kill it wherever it is
    deadline = time.monotonic() + PATIENCE
    while conn.execute("SELECT count(*) AS n FROM user_transactions WHERE tx_type = 'spend'"
                       " AND call_minute > 1").fetchone()["n"] == 0:
        assert time.monotonic() < deadline, "the ticker never charged anything"
    killed.kill()
    killed.communicate(timeout=PATIENCE)
    check_ledger(conn)

    survivor = subprocess.run([sys.executable, str(TICKER), LAST_TICK.isoformat()],
                              env=db.env(), capture_output=True, text=True, timeout=PATIENCE)
    assert survivor.returncode == 0, survivor.stderr[-3000:]
    for call_id, _, affordable in calls:
        assert spent_minutes(conn, call_id) == list(range(1, min(16, affordable) + 1))
    check_ledger(conn)
