"""Each fault of production, on purpose and one at a time, with real processes and servers:
a SIGKILLed worker, Redis restarted with and without persistence, PostgreSQL shut down
immediately mid-transaction, the lock holder's backend terminated, a finished message
replayed. After each, the ledger's invariants hold and nothing ran twice."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from psycopg.rows import dict_row

import workers
from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from workers.engine import catch_up, cron
from workers.engine.broker import send_run
from workers.engine.jobs import LOCK_NAMESPACE
from workers.engine.schema import apply_schema
from workers.schedule import JOBS

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from ledger import add_user, check_ledger, spent_minutes, start_call  # noqa: E402

pytestmark = pytest.mark.acceptance

IST = ZoneInfo("Asia/Kolkata")
PATIENCE = 60  # seconds to wait for a process to get somewhere; polled
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")
INTEGRATION = Path(__file__).parents[1] / "integration"
#: A worker that notices a dead worker's messages within seconds.
FAST_RECOVERY = {"DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "2000",
                 "DRAMATIQ_MAINTENANCE_CHANCE": "1000000"}


def wait_for(what: str, check, *, alive=()):
    deadline = time.monotonic() + PATIENCE
    while not (result := check()):
        for process in alive:
            assert process.poll() is None, f"{what}: a process died ({process.args})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    with log.open("a") as out:  # the child keeps its own copy of the file
        return subprocess.Popen([DRAMATIQ, "workers", "--processes", "1", "--threads", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_hard(process: subprocess.Popen) -> None:
    """SIGKILL the whole worker (main and children): nothing is requeued gracefully."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=PATIENCE)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            kill_hard(process)


def runs(conn, job: str) -> list[dict]:
    return conn.execute("SELECT scheduled_for, status, attempt FROM job_runs WHERE job = %s"
                        " ORDER BY scheduled_for", [job]).fetchall()


def blocked_on_lock(conn) -> bool:
    return conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type ="
                        " 'Lock' AND datname = current_database()").fetchone()["n"] > 0


def test_a_sigkilled_workers_run_is_redelivered_and_charges_each_minute_once(db, conn, tmp_path):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    caller = add_user(conn, coins=1000, seen=now + timedelta(hours=1))
    listener = add_user(conn, role="listener", seen=now + timedelta(hours=1))
    call_id = start_call(conn, caller, listener, now - timedelta(minutes=5))
    env = db.env(**FAST_RECOVERY)
    first = start_worker(env, tmp_path / "first.log")
    try:
        with psycopg.connect(db.url) as blocker:  # holds the tick inside its work
            blocker.execute("LOCK TABLE user_transactions IN ACCESS EXCLUSIVE MODE")
            redis_client = redis.Redis.from_url(db.redis_url)
            send_run(workers.broker, "coin_deduction", now)
            wait_for("the tick blocked in its work", lambda: blocked_on_lock(conn),
                     alive=[first])
            kill_hard(first)
            blocker.rollback()
        assert runs(conn, "coin_deduction")[0]["status"] == "running"  # its owner died
        second = start_worker(env, tmp_path / "second.log")
        try:
            wait_for("the redelivered run", lambda: [r for r in runs(conn, "coin_deduction")
                                                     if r["status"] == "succeeded"],
                     alive=[second])
        finally:
            stop(second)
        redis_client.close()
    finally:
        kill_hard(first)
    [run] = runs(conn, "coin_deduction")
    assert (run["status"], run["attempt"]) == ("succeeded", 2)
    assert spent_minutes(conn, call_id) == [1, 2, 3, 4, 5, 6]
    check_ledger(conn)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own, to restart at will."""
    servers = []

    def start(appendonly: bool) -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / "redis", port=port, appendonly=appendonly)
        server.start()
        servers.append(server)
        return server

    port = free_port()
    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("appendonly", [False, True], ids=["no persistence", "AOF"])
def test_a_redis_restart_loses_queued_messages_or_not_and_the_slot_runs_once(
        db, conn, tmp_path, own_redis, appendonly):
    server = own_redis(appendonly)
    env = db.env(REDIS_URL=server.url, CATCH_UP_ON_BOOT="true")
    now = datetime.now(UTC)
    slot = cron.latest_at_or_before(JOBS["badge_assignment"].cron, IST, now - catch_up.GRACE)
    enqueue = subprocess.run(
        [sys.executable, "-m", "workers", "run-task", "badge_assignment", "--as-of",
         slot.isoformat(), "--enqueue"], env=env, capture_output=True, text=True, timeout=60)
    assert enqueue.returncode == 0, enqueue.stderr
    client = redis.Redis.from_url(server.url)
    if appendonly:
        client.execute_command("BGREWRITEAOF")  # as an everysec fsync would have by now
        wait_for("the AOF rewrite", lambda: client.info("persistence")[
            "aof_rewrite_in_progress"] == 0)
    client.close()
    server.stop()
    server.start()
    queued = redis.Redis.from_url(server.url).llen("dramatiq:default")
    assert queued == (1 if appendonly else 0)

    worker = start_worker(env, tmp_path / "worker.log")  # its boot catch-up covers a loss
    try:
        wait_for("the slot's run", lambda: [r for r in runs(conn, "badge_assignment")
                                            if r["status"] == "succeeded"
                                            and r["scheduled_for"] == slot], alive=[worker])
        wait_for("the queue drained", lambda: redis.Redis.from_url(server.url).llen(
            "dramatiq:default") == 0)
    finally:
        stop(worker)
    badge_runs = runs(conn, "badge_assignment")  # the boot catch-up ran the week's days too
    assert [(r["status"], r["attempt"]) for r in badge_runs if r["scheduled_for"] == slot] == \
        [("succeeded", 1)]


def test_postgres_shut_down_immediately_mid_tick_loses_nothing(tmp_path):
    postgres = EmbeddedPostgres(tmp_path / "postgres", port=free_port(), durable=True)
    url = postgres.start()
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            apply_schema(conn)
            t0 = datetime(2026, 11, 22, 10, 0, tzinfo=IST)
            listener = add_user(conn, role="listener", seen=t0 + timedelta(days=1))
            calls = [start_call(conn, add_user(conn, coins=300, seen=t0 + timedelta(days=1)),
                                listener, t0) for _ in range(200)]
        env = {**os.environ, "DATABASE_URL": url}
        ticker = subprocess.Popen(
            [sys.executable, str(INTEGRATION / "ticker.py"), "--forever",
             (t0 + timedelta(minutes=40)).isoformat(), (t0 + timedelta(minutes=3)).isoformat()],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert ticker.stdout.readline().strip() == "ready"
        with psycopg.connect(url, autocommit=True) as watcher:  # catch it mid-statement
            wait_for("a tick in progress", lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND application_name = 'saathii-workers'").fetchone()[0])
            postgres.stop("immediate")
        ticker.wait(timeout=PATIENCE)  # its connection died with the server
        ticker.stdout.close()
        postgres.start()
        final = subprocess.run([sys.executable, str(INTEGRATION / "ticker.py"),
                                (t0 + timedelta(minutes=40)).isoformat()],
                               env=env, capture_output=True, text=True, timeout=PATIENCE)
        assert final.returncode == 0, final.stderr[-2000:]
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            check_ledger(conn)
            for call_id in calls:  # 300 coins: minute 1 + 29 more
                assert spent_minutes(conn, call_id) == list(range(1, 31))
    finally:
        postgres.stop("immediate")


def test_terminating_the_lock_holders_backend_frees_the_job_and_undoes_its_writes(
        db, conn, tmp_path):
    slot = datetime(2026, 11, 22, 18, 31, tzinfo=UTC)
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, str(INTEGRATION / "lock_holder.py"), "badge_assignment",
         slot.isoformat(), str(release)], env=db.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    [backend] = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s"
        " AND granted", [LOCK_NAMESPACE, JOBS["badge_assignment"].lock_id]).fetchall()
    conn.execute("SELECT pg_terminate_backend(%s)", [backend["pid"]])
    holder.communicate(timeout=PATIENCE)  # its run fails: its connection is gone

    assert conn.execute("SELECT count(*) AS n FROM users").fetchone()["n"] == 0
    rerun = subprocess.run([sys.executable, "-m", "workers", "run-task", "badge_assignment",
                            "--as-of", slot.isoformat()], env=db.env(), capture_output=True,
                           text=True, timeout=PATIENCE)
    assert rerun.returncode == 0, rerun.stderr
    [run] = runs(conn, "badge_assignment")
    assert (run["status"], run["attempt"]) == ("succeeded", 2)
