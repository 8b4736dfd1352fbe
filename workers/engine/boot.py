"""Where one of our processes sets itself up, once: a Dramatiq worker process (the broker's
ProcessBoot middleware), the periodiq scheduler (its first look at the schedule, see
workers.engine.periodic), the CLI (workers.cli.main) and, later, the admin server.

Booting reads every setting (a bad one: one line, exit 2), configures logging and Sentry,
checks the job table (every row's work resolves and its parameters validate), subscribes
the run log and Sentry to the run hooks, and configures the runtime the actors use.
Importing any module of ours does none of this: a host process that imports us keeps its
own logging and Sentry client.
"""

import atexit
import logging
import signal
import sys
import threading
from datetime import timedelta
from functools import partial

import dramatiq
import pendulum

from workers import schedule
from workers.engine import runtime
from workers.engine.broker import send_run
from workers.engine.hooks import Hooks
from workers.engine.jobs import check_table
from workers.engine.liveness import Heartbeat
from workers.errors import InvalidParams
from workers.observability.alerts import CronMonitors, RunAlerts, init_sentry
from workers.observability.logs import RunLog, configure_logging
from workers.observability.webhook import RunWebhook
from workers.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: What a process may be, for its log and (later) its heartbeat.
KINDS = ("worker", "scheduler", "cli", "admin")


def boot(kind: str, *, settings: Settings | None = None,
         broker: dramatiq.Broker | None = None) -> runtime.Runtime:
    """Set this process up as a `kind` of ours; its runtime. `broker`, when given, is
    where the runtime sends runs (the catch-up's)."""
    if kind not in KINDS:
        raise ValueError(f"unknown process kind {kind!r}; known: {', '.join(KINDS)}")
    settings = settings or load_settings()
    configure_logging(settings)
    if kind == "scheduler":  # periodiq's scheduled_at: now on pendulum's local clock
        pendulum.set_local_timezone(pendulum.timezone(settings.app_timezone))
    try:
        check_table(schedule.JOBS.values(), settings.model_dump())
    except InvalidParams as error:  # a setting the job's own model refuses
        print(f"saathii-workers: invalid parameters for {error}", file=sys.stderr)
        raise SystemExit(2) from None
    hooks = Hooks(RunLog(settings.timezone))
    if init_sentry(settings):
        hooks.subscribe(RunAlerts())
        hooks.subscribe(CronMonitors(settings.app_timezone))
    send = None if broker is None else partial(send_run, broker)
    log.debug("booted as %s", kind)
    current = runtime.configure(settings, hooks=hooks, send=send)
    if settings.alert_webhook_url:
        hooks.subscribe(RunWebhook(settings.alert_webhook_url, current.pool))
    if kind == "scheduler":
        beat_until_exit(heartbeat(current, "scheduler"))
    return current


def heartbeat(current: runtime.Runtime, kind: str, *, queues: tuple[str, ...] = (),
              threads: int = 0) -> Heartbeat:
    """This process's heartbeat, started and told of the runs it executes."""
    beat = Heartbeat(current.pool, kind, queues=queues, threads=threads,
                     every=timedelta(seconds=current.settings.process_beat_seconds))
    current.hooks.subscribe(beat)
    return beat.start()


def beat_until_exit(beat: Heartbeat) -> None:
    """The scheduler's exit is clean on SIGTERM as on Ctrl-C: periodiq dies of SIGTERM's
    default action, which would leave its heartbeat to go stale; SystemExit lets atexit
    remove it."""
    atexit.register(beat.stop)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_cleanly)


def _exit_cleanly(signum, frame):
    raise SystemExit(0)
