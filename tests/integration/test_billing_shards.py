"""Billing split into shards (BILLING_SHARDS): each shard bills its callers' calls and pays
its listeners, under its own job slot and advisory lock. Shards running at once, and
replicas configured with a different number of shards, still charge each minute once;
a shard whose worker died is billed in full by its next run."""

import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from ledger import add_user, call, check_billed, check_ledger, spent_minutes, start_call

from workers.engine.jobs import EVERYTHING, Shard
from workers.engine.runs import RunOptions, Status, run_job
from workers.schedule import table

TICKER = Path(__file__).with_name("ticker.py")
IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
MINUTE = timedelta(minutes=1)
LAST_TICK = T0 + 12 * MINUTE
PATIENCE = 120  # seconds a process may take
OPTIONS = RunOptions(timezone=IST, lock_timeout_ms=5_000, abandon_grace=timedelta(minutes=1),
                     settings={"heartbeat_timeout_seconds": 120})


def billing_jobs(shards: int):
    return [job for job in table(shards).values() if job.name.startswith("coin_deduction")]


def world(conn, calls: int, seed: int) -> list[tuple[int, int, int]]:
    """(call, caller, minutes its coins pay for) for `calls` audio calls whose callers and
    listeners fall in both shards; a few callers have a second call, billed oldest first."""
    rng = random.Random(seed)
    later = T0 + timedelta(days=1)
    listeners = [add_user(conn, role="listener", seen=later) for _ in range(5)]
    made = []
    for _ in range(calls):
        minutes = rng.randint(1, 15)
        caller = add_user(conn, coins=10 * minutes, seen=later)
        made.append((start_call(conn, caller, rng.choice(listeners), T0), caller, minutes))
    for _, caller, _ in rng.sample(made, 4):  # second calls: only the ledger judges them
        conn.execute("UPDATE user_wallets SET balance_coins = balance_coins + 200"
                     " WHERE user_id = %s", [caller])
        conn.execute("INSERT INTO user_transactions (wallet_id, tx_type, coins_change)"
                     " SELECT wallet_id, 'purchase', 200 FROM user_wallets WHERE user_id = %s",
                     [caller])
        start_call(conn, caller, rng.choice(listeners), T0 + 2 * MINUTE)
    return [entry for entry in made if not second_call(conn, entry[1])]


def second_call(conn, caller: int) -> bool:
    return conn.execute("SELECT count(*) > 1 AS two FROM user_calls WHERE user_id = %s",
                        [caller]).fetchone()["two"]


def ticks(seed: int) -> list[str]:
    rng = random.Random(seed)
    times = [T0 + k * MINUTE for k in range(13)] * 2
    rng.shuffle(times)
    return [at.isoformat() for at in times + [LAST_TICK]]


def ticker(db, seed: int, *shard: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TICKER), *shard, *ticks(seed)], env=db.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_shards_and_an_unsharded_replica_at_once_charge_each_minute_once(db, conn):
    calls = world(conn, 40, seed=3)
    processes = [ticker(db, 1, "--shard", "0/2"), ticker(db, 2, "--shard", "1/2"),
                 ticker(db, 3, "--shard", "1/2"), ticker(db, 4)]  # a replica with K = 1
    for process in processes:
        _, err = process.communicate(timeout=PATIENCE)
        assert process.returncode == 0, err[-3000:]

    check_billed(conn, calls, due=13)  # minutes started by LAST_TICK
    check_ledger(conn)


def run_shard(conn, job, at: datetime):
    return run_job(conn, job, at, OPTIONS)


def test_a_shard_whose_worker_died_is_billed_in_full_at_its_next_run(conn):
    shard_0, shard_1 = billing_jobs(2)
    later = T0 + timedelta(days=1)
    even_listener, odd_listener = sorted(
        (add_user(conn, role="listener", seen=later) for _ in range(2)), key=lambda u: u % 2)
    callers = {u % 2: u for u in (add_user(conn, coins=1_000, seen=later) for _ in range(2))}
    # each caller calls the listener of the other shard: its pay is the other shard's work
    to_odd = start_call(conn, callers[0], odd_listener, T0)
    to_even = start_call(conn, callers[1], even_listener, T0)

    for minute in (1, 2):  # shard 1's worker is dead at +1 and +2: only shard 0 bills
        assert run_shard(conn, shard_0, T0 + minute * MINUTE).status == Status.SUCCEEDED
    assert spent_minutes(conn, to_odd) == [1, 2, 3]
    assert spent_minutes(conn, to_even) == [1]

    # shard 1 is back at +3: it charges every minute its calls owe, once
    outcome = run_shard(conn, shard_1, T0 + 3 * MINUTE)
    assert outcome.result["minutes_charged"] == 3
    assert spent_minutes(conn, to_even) == [1, 2, 3, 4]

    # shard 0 ends its caller's call (silent from now on); shard 1 pays that listener
    conn.execute("UPDATE user_status SET last_seen = %s WHERE user_id = %s",
                 [T0 + 3 * MINUTE, callers[0]])
    ended = run_shard(conn, shard_0, T0 + 6 * MINUTE).result
    assert ended["calls_ended"] == {"heartbeat_timeout": 1} and ended["calls_settled"] == 0
    assert call(conn, to_odd)["settled_at"] is None
    paid = run_shard(conn, shard_1, T0 + 6 * MINUTE).result
    assert paid["calls_settled"] == 1 and call(conn, to_odd)["settled_at"] is not None
    check_ledger(conn, settled=False)


def test_billing_jobs_one_per_shard_with_locks_of_their_own():
    assert [(j.name, j.lock_id, j.shard) for j in billing_jobs(1)] == [
        ("coin_deduction", 1, EVERYTHING)]
    jobs = table(3)
    sharded = billing_jobs(3)
    assert [j.name for j in sharded] == ["coin_deduction_0", "coin_deduction_1",
                                         "coin_deduction_2"]
    assert [j.shard for j in sharded] == [Shard(0, 3), Shard(1, 3), Shard(2, 3)]
    assert len({job.lock_id for job in jobs.values()}) == len(jobs)
    with pytest.raises(ValueError):
        table(0)
    with pytest.raises(ValueError):
        Shard(2, 2)


def test_each_shard_job_has_billings_parameters_and_its_own_overrides(conn):
    shard_0, shard_1 = billing_jobs(2)
    assert shard_0.params == shard_1.params == table(1)["coin_deduction"].params
    conn.execute("INSERT INTO job_settings (job, overrides) VALUES (%s, %s)",
                 [shard_1.name, '{"heartbeat_timeout_seconds": 60}'])
    seen = {job.name: run_job(conn, job, T0, OPTIONS, work=lambda conn, run: {
        "timeout": run.params.heartbeat_timeout_seconds}).result for job in (shard_0, shard_1)}
    assert seen == {shard_0.name: {"timeout": 120}, shard_1.name: {"timeout": 60}}
