"""Importing is not booting. A host process (the Saathii API, a script) imports any module
of ours and keeps its own logging, Sentry client, Dramatiq broker and pendulum clock, and
nothing connects; our own processes boot where they start (Dramatiq's process boot,
periodiq's first look at the schedule, the CLI), from environment variables alone."""

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]

#: The host: its own logging, Sentry client, broker and clock first; then every module of
#: ours; then what is left of its own. Prints one JSON line.
HOST = """
import importlib, json, logging, pkgutil, sys
import dramatiq, pendulum, sentry_sdk
from dramatiq.brokers.stub import StubBroker

logging.basicConfig(level=logging.WARNING, format="host: %(message)s")
handlers = list(logging.getLogger().handlers)
sentry_sdk.init(dsn="http://hostkey@127.0.0.1:9/1", default_integrations=False)
client = sentry_sdk.get_client()
host_broker = StubBroker()
dramatiq.set_broker(host_broker)
pendulum.set_local_timezone(pendulum.timezone("America/New_York"))

import workers
imported = sorted(name for _, name, _ in pkgutil.walk_packages(workers.__path__, "workers.")
                  if not name.endswith("__main__"))
for name in imported:
    importlib.import_module(name)

from workers.engine import runtime
ours = [logging.getLogger(name) for name in ("workers", "workers.runs", "dramatiq", "periodiq")]
print(json.dumps({
    "imported": imported,
    "handlers_kept": logging.getLogger().handlers == handlers,
    "our_loggers_untouched": all(not l.handlers and l.level == logging.NOTSET for l in ours),
    "sentry_kept": sentry_sdk.get_client() is client
                   and client.dsn == "http://hostkey@127.0.0.1:9/1",
    "broker_kept": dramatiq.get_broker() is host_broker,
    "clock_kept": pendulum.local_timezone().name == "America/New_York",
    "booted": runtime.booted(),
}))
"""


class Listener:
    """A TCP port that counts the connections made to it."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.socket.close()


@pytest.fixture
def listener():
    listening = Listener()
    yield listening
    listening.close()


def test_a_host_imports_every_module_and_keeps_its_own_logging_sentry_broker_and_clock(
        listener, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{listener.port}/x",
           "REDIS_URL": f"redis://127.0.0.1:{listener.port}/0",
           # Bad settings that none of the imports needs: they must not break them.
           "APP_TIMEZONE": "Mars/Olympus", "LOG_LEVEL": "loud", "SENTRY_DSN": "not-a-dsn",
           "LOG_DIR": "/dev/null/sub"}
    done = subprocess.run([sys.executable, "-c", HOST], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"workers.cli", "workers.engine.boot", "workers.engine.cron", "workers.app",
            "workers.observability.alerts", "workers.jobs.coin_deduction"} <= set(
        report.pop("imported"))
    assert report == {"handlers_kept": True, "our_loggers_untouched": True,
                      "sentry_kept": True, "broker_kept": True, "clock_kept": True,
                      "booted": False}
    assert done.stderr == ""
    assert listener.accepted == 0, "importing connected to PostgreSQL or Redis"


def test_a_bad_broker_setting_stops_the_import_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import workers"], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "BILLING_SHARDS": "many"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "saathii-workers: invalid setting BILLING_SHARDS: Input should be a valid integer,"
        " unable to parse string as an integer"]


def test_a_worker_process_sets_up_its_logging_when_it_boots(db, tmp_path):
    """LOG_DIR is a setting only a booted process reads: its daily file appears when the
    worker process boots, with the boot-time catch-up's outcome in it."""
    log_dir = tmp_path / "logs"
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dramatiq"), "workers", "--processes", "1",
         "--threads", "1"], cwd=ROOT, env=db.env(LOG_DIR=str(log_dir), CATCH_UP_ON_BOOT="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = 60
        while deadline > 0 and not any(
                "catch_up" in path.read_text() for path in log_dir.glob("*.log")):
            assert worker.poll() is None, "the worker exited"
            deadline -= 0.2
            threading.Event().wait(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    [log] = log_dir.glob("saathii-workers-*.log")
    assert "workers.runs: catch_up" in log.read_text()


@pytest.mark.parametrize("argv", [
    pytest.param(["dramatiq", "workers", "--processes", "1", "--threads", "1"], id="dramatiq"),
    pytest.param(["periodiq", "workers"], id="periodiq"),
    pytest.param([sys.executable, "-m", "workers", "status"], id="cli"),
])
def test_our_processes_read_every_setting_when_they_boot(argv, tmp_path):
    if argv[0] in ("dramatiq", "periodiq"):
        argv = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "APP_TIMEZONE": "Mars/Olympus",
                               "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert ("saathii-workers: invalid setting APP_TIMEZONE: unknown timezone 'Mars/Olympus'"
            " (use an IANA name like Asia/Kolkata)") in done.stderr.splitlines()
    assert "Traceback" not in done.stderr


def test_make_run_task_runs_a_job_from_the_environment_alone(db):
    done = subprocess.run(["make", "--no-print-directory", "run-task", "TASK=presence_cleanup",
                           "ARGS=--as-of 2026-11-22T10:00Z"], cwd=ROOT, env=db.env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome["job"], outcome["status"], outcome["scheduled_for"]) == (
        "presence_cleanup", "succeeded", "2026-11-22T10:00:00+00:00")
