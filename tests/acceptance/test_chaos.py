"""`make chaos`, short: the harness (python -m chaos) as a subprocess, every fault kind at
least once, and a ledger found whole. And its judge: the checks of chaos/checks.sql find
nothing in a sound ledger and find each planted violation."""

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from ledger import add_user, give_badge, seen, start_call  # noqa: E402

from chaos import checks  # noqa: E402
from chaos.faults import KINDS  # noqa: E402
from workers.app import end_call  # noqa: E402
from workers.engine.runs import RunOptions, run_job  # noqa: E402
from workers.schedule import JOBS  # noqa: E402

IST = ZoneInfo("Asia/Kolkata")
HEARTBEAT = timedelta(seconds=180)
#: The short storm: 45 real seconds of storm, about a minute and a quarter in all.
SHORT_RUN = ["--duration", "45", "--workers", "3", "--seed", "7"]


def storm(*argv: str) -> tuple[int, dict, str]:
    """Run `python -m chaos argv`: its exit code, JSON summary, and a report for failures."""
    done = subprocess.run([sys.executable, "-m", "chaos", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    report = f"exit {done.returncode}\n{done.stderr[-6000:]}\n{done.stdout[-4000:]}"
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), report


@pytest.mark.acceptance
@pytest.mark.slow
def test_a_short_storm_injects_every_fault_and_leaves_the_ledger_whole():
    code, summary, report = storm(*SHORT_RUN)
    assert (code, summary["violation_count"], summary["violations"]) == \
        (0, 0, []), report
    assert all(summary["faults"][kind] >= 1 for kind in KINDS), report
    assert summary["simulated_minutes"] == 45
    assert summary["calls"] > 0 and summary["minutes_charged_by_workers"] > 0, report
    assert summary["settle"]["final_round"]["coin_deduction"] == "succeeded", report


@pytest.mark.acceptance
@pytest.mark.slow
def test_a_storm_over_two_billing_shards_leaves_the_ledger_whole():
    """BILLING_SHARDS=2 in every process: each shard its own job, lock and message, under
    the same faults (a SIGKILLed worker's shard is billed by another at its next minute)."""
    code, summary, report = storm("--duration", "30", "--workers", "3", "--seed", "3",
                                  "--shards", "2")
    assert (code, summary["violation_count"], summary["billing_shards"]) == \
        (0, 0, 2), report
    assert all(summary["faults"][kind] >= 1 for kind in KINDS), report
    assert {job: summary["settle"]["final_round"][job]
            for job in ("coin_deduction_0", "coin_deduction_1")} == \
        {"coin_deduction_0": "succeeded", "coin_deduction_1": "succeeded"}, report
    assert "coin_deduction" not in summary["runs"], report


@pytest.mark.acceptance
@pytest.mark.slow
@pytest.mark.parametrize("end_route", ["broken", "fixed"])
def test_a_storm_with_traffic_as_the_real_api_leaves_the_ledger_whole(end_route):
    """The API's own schema adopted by db init, its statements without transactions, its
    heartbeat and its end route as written (it fails: calls end by silence, their maximum
    length or the coins) or fixed (the API pays; the workers charge to its end, pay nothing
    twice): every fault but a PostgreSQL crash (which breaks the API's own books)."""
    code, summary, report = storm("--duration", "30", "--workers", "2", "--seed", "5",
                                  "--api", end_route)
    assert (code, summary["violation_count"], summary["api"]) == (0, 0, end_route), report
    assert all(summary["faults"][kind] >= 1 for kind in KINDS
               if kind != "postgres_immediate_restart"), report
    assert summary["faults"]["postgres_immediate_restart"] == 0, report
    hang_ups = "api_hang_up_ended" if end_route == "fixed" else "api_hang_up_failed_500"
    assert summary["traffic"].get(hang_ups), report
    if end_route == "fixed":
        assert summary["calls_by_state"].get("api") and summary["paid_by_api"]["calls"], report


# The judge ----------------------------------------------------------------------------

T0 = datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=IST)
FINAL = datetime(2026, 11, 22, 10, 10, tzinfo=IST)
OPTIONS = RunOptions(timezone=IST, lock_timeout_ms=2000, abandon_grace=timedelta(seconds=60),
                     settings={"heartbeat_timeout_seconds": 180})


def tick(conn, at: datetime) -> None:
    outcome = run_job(conn, JOBS["coin_deduction"], at, OPTIONS)
    assert outcome.status == "succeeded", outcome


def sound_ledger(conn) -> None:
    """A few calls, charged, ended and settled by the workers' own code: one hung up, one
    out of coins, one still ongoing at the final tick; a badge on one listener."""
    rich, poor = add_user(conn, coins=1000), add_user(conn, coins=30)
    badged, plain = add_user(conn, role="listener"), add_user(conn, role="listener")
    give_badge(conn, badged, T0.date(), "gold")
    seen(conn, FINAL, rich, poor, badged, plain)
    hung_up = start_call(conn, rich, badged, T0)
    start_call(conn, poor, plain, T0)  # 30 coins: minutes 1-3, then out of coins
    tick(conn, T0 + timedelta(minutes=5))
    end_call(conn, hung_up, T0 + timedelta(minutes=7, seconds=30), timezone=IST,
             heartbeat_timeout=HEARTBEAT)  # the chaos run's timeout
    start_call(conn, rich, plain, T0 + timedelta(minutes=8), "video")  # ongoing
    tick(conn, FINAL)


def verdict(db) -> list[str]:
    violations, _ = checks.judge(db.url, start=T0, final=FINAL, heartbeat=HEARTBEAT,
                                 timezone="Asia/Kolkata")
    return [violation["check"] for violation in violations]


def test_the_checks_find_nothing_wrong_with_a_sound_ledger(db, conn):
    sound_ledger(conn)
    states = conn.execute("SELECT status, end_reason FROM user_calls ORDER BY call_id")
    assert [(r["status"], r["end_reason"]) for r in states] == [
        ("completed", "completed"), ("dropped", "insufficient_coins"), ("ongoing", None)]
    assert verdict(db) == []


FIRST_SPEND = "(SELECT min(transaction_id) FROM user_transactions WHERE tx_type = 'spend'"
PLANTED = {
    "minute_charged_twice": [
        "DROP INDEX user_transactions_one_spend_per_call_minute",
        "INSERT INTO user_transactions (wallet_id, tx_type, coins_change, call_id, call_minute)"
        " SELECT wallet_id, tx_type, coins_change, call_id, call_minute"
        " FROM user_transactions WHERE tx_type = 'spend' AND call_minute = 2 LIMIT 1"],
    "spend_not_a_call_minute": [
        f"UPDATE user_transactions SET coins_change = -11 WHERE transaction_id = {FIRST_SPEND})"],
    "minutes_not_contiguous": [
        f"DELETE FROM user_transactions WHERE transaction_id = {FIRST_SPEND}"
        " AND call_minute = 2)"],
    "ended_call_minutes": [
        "ALTER TABLE user_calls DISABLE TRIGGER ended_call_stays_ended",  # it refuses this
        "UPDATE user_calls SET end_time = end_time + interval '61 seconds'"
        " WHERE status = 'completed'"],
    "ongoing_call_minutes": [
        "UPDATE user_calls SET start_time = start_time - interval '1 minute'"
        " WHERE status = 'ongoing'"],
    "balance_differs_from_ledger": [
        "UPDATE user_wallets SET balance_coins = balance_coins + 1"
        " WHERE wallet_id = (SELECT min(wallet_id) FROM user_wallets)"],
    "balance_negative_in_history": [
        "INSERT INTO user_transactions (wallet_id, tx_type, coins_change)"
        " SELECT min(wallet_id), 'purchase', unnest(ARRAY[-100000, 100000])"
        " FROM user_wallets"],
    "money_constraint_missing": [
        "ALTER TABLE user_wallets DROP CONSTRAINT balance_coins_never_negative"],
    "negative_balance": [
        "ALTER TABLE user_wallets DROP CONSTRAINT withdrawable_money_never_negative",
        "UPDATE user_wallets SET withdrawable_money = -1"
        " WHERE wallet_id = (SELECT min(wallet_id) FROM user_wallets)"],
    "coins_spent_differs_from_spends": [
        "UPDATE user_calls SET coins_spent = coins_spent + 10 WHERE status = 'ongoing'"],
    "ended_call_not_settled": [
        "UPDATE user_calls SET settled_at = NULL WHERE status = 'completed'"],
    "ongoing_call_settled": [
        "UPDATE user_calls SET settled_at = now() WHERE status = 'ongoing'"],
    "call_paid_more_than_once": [
        "DROP INDEX user_transactions_one_earn_per_call",
        "INSERT INTO user_transactions (wallet_id, tx_type, money_change, call_id)"
        " SELECT wallet_id, 'earn', money_change, call_id FROM user_transactions"
        " WHERE tx_type = 'earn' LIMIT 1"],
    "call_paid_wrong_rate": [
        "UPDATE listener_badges SET audio_rate_per_minute = 9.99"],
    "slot_succeeded_twice": [
        "ALTER TABLE job_runs DROP CONSTRAINT job_runs_job_scheduled_for_key",
        "INSERT INTO job_runs (job, scheduled_for, status)"
        " SELECT job, scheduled_for, status FROM job_runs LIMIT 1"],
    "running_without_owner": [
        "UPDATE job_runs SET status = 'running', backend_pid = 0"
        " WHERE scheduled_for < %(final)s"],
    "final_tick_missing": [
        "UPDATE job_runs SET status = 'failed' WHERE scheduled_for = %(final)s"],
}


def test_every_check_has_a_planted_violation():
    assert sorted(PLANTED) == sorted(name for name in checks.queries()
                                     if not name.startswith("summary_"))


@pytest.mark.parametrize("check", sorted(PLANTED))
def test_each_check_finds_its_planted_violation(db, conn, check):
    sound_ledger(conn)
    for statement in PLANTED[check]:
        conn.execute(statement, {"final": FINAL})
    assert check in verdict(db)
